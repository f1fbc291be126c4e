//! Partitioner properties: coverage, disjointness, determinism, skew vs alpha, exactly k labels.

use super::*;

/// 20 labels with uneven sizes (40 ..= 135 rows), in a scrambled order.
fn labels() -> Vec<u32> {
    let mut v = Vec::new();
    for l in 0..20u32 {
        v.extend(std::iter::repeat_n(l, 40 + 5 * l as usize));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    v.shuffle(&mut rng);
    v
}

fn assert_exact_cover(parts: &[Vec<usize>], n: usize) {
    let mut seen = vec![0u8; n];
    for p in parts {
        for &r in p {
            seen[r] += 1;
        }
    }
    assert!(seen.iter().all(|&s| s == 1), "every row exactly once");
}

fn schemes() -> Vec<Scheme> {
    vec![
        Scheme::Iid,
        Scheme::Dirichlet { alpha: 0.5, min_client_size: 10 },
        Scheme::Pathological { classes_per_client: 2 },
    ]
}

#[test]
fn every_scheme_covers_each_row_once_and_is_deterministic() {
    let l = labels();
    for s in schemes() {
        let a = partition(&l, 20, 10, &s, 42).unwrap();
        assert_eq!(a.len(), 10);
        assert_exact_cover(&a, l.len());
        assert_eq!(a, partition(&l, 20, 10, &s, 42).unwrap(), "{s:?} deterministic");
        assert_ne!(a, partition(&l, 20, 10, &s, 43).unwrap(), "{s:?} depends on the seed");
    }
}

#[test]
fn iid_shards_differ_by_at_most_one_row() {
    let l = labels();
    let parts = partition(&l, 20, 6, &Scheme::Iid, 1).unwrap();
    let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
    // 1,750 rows over 6 clients: 4 clients of 292, then 2 of 291.
    assert_eq!(sizes, vec![292, 292, 292, 292, 291, 291]);
    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
}

#[test]
fn label_entropy_falls_as_alpha_falls() {
    let l = labels();
    let entropy = |alpha: f64| {
        let parts = partition(&l, 20, 10, &Scheme::Dirichlet { alpha, min_client_size: 1 }, 42).unwrap();
        mean_label_entropy_bits(&label_counts(&l, &parts, 20))
    };
    let iid = {
        let parts = partition(&l, 20, 10, &Scheme::Iid, 42).unwrap();
        mean_label_entropy_bits(&label_counts(&l, &parts, 20))
    };
    let (e100, e1, e01) = (entropy(100.0), entropy(1.0), entropy(0.1));
    let global = label_entropy_bits(&label_counts(&l, &[(0..l.len()).collect()], 20)[0]);
    assert!(iid > 0.97 * global && iid <= global, "iid clients look like the whole ({global} bits), got {iid}");
    assert!(e100 > e1 && e1 > e01, "entropy {e100} > {e1} > {e01}");
    assert!(e01 < 2.5, "alpha 0.1 is strongly skewed, got {e01}");
}

#[test]
fn dirichlet_respects_min_size_or_fails_clearly() {
    let l = labels();
    let parts = partition(&l, 20, 10, &Scheme::Dirichlet { alpha: 0.1, min_client_size: 30 }, 42).unwrap();
    assert!(parts.iter().all(|p| p.len() >= 30));
    let err = partition(&l, 20, 10, &Scheme::Dirichlet { alpha: 0.1, min_client_size: 1000 }, 42).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("partition.min_client_size") && msg.contains("11 draws"), "{msg}");
    let err = partition(&l, 20, 10, &Scheme::Dirichlet { alpha: -1.0, min_client_size: 1 }, 42).unwrap_err();
    assert!(err.to_string().contains("partition.alpha must be > 0 (got -1)"), "{err}");
}

#[test]
fn pathological_gives_exactly_k_labels_per_client() {
    let l = labels();
    for (clients, k) in [(10, 2), (20, 2), (7, 3), (3, 7), (20, 20), (1, 20)] {
        let parts = partition(&l, 20, clients, &Scheme::Pathological { classes_per_client: k }, 5).unwrap();
        assert_exact_cover(&parts, l.len());
        for counts in label_counts(&l, &parts, 20) {
            assert_eq!(counts.iter().filter(|&&c| c > 0).count(), k, "{clients} clients, k = {k}");
        }
    }
    let err = partition(&l, 20, 5, &Scheme::Pathological { classes_per_client: 2 }, 5).unwrap_err();
    assert!(err.to_string().contains("clients x classes_per_client >= 20"), "{err}");
    let err = partition(&l, 20, 5, &Scheme::Pathological { classes_per_client: 21 }, 5).unwrap_err();
    assert!(err.to_string().contains("partition.classes_per_client"), "{err}");
}

#[test]
fn entropy_of_known_histograms() {
    assert_eq!(label_entropy_bits(&[5, 0, 0]), 0.0);
    assert!((label_entropy_bits(&[1, 1]) - 1.0).abs() < 1e-12);
    assert!((label_entropy_bits(&[1, 1, 1, 1]) - 2.0).abs() < 1e-12);
    assert_eq!(label_entropy_bits(&[]), 0.0);
}

#[test]
fn too_many_clients_is_an_error() {
    let err = partition(&[0, 1, 0], 2, 4, &Scheme::Iid, 1).unwrap_err();
    assert!(err.to_string().contains("partition.clients = 4"), "{err}");
}

/// Writer ids: "a" x5, "b" x3, "c" x1, "d" x2, "e" x1, interleaved.
fn writer_ids() -> Vec<String> {
    ["a", "b", "a", "c", "a", "d", "b", "a", "e", "d", "b", "a"].iter().map(|s| s.to_string()).collect()
}

#[test]
fn natural_gives_one_client_per_id_in_first_seen_order() {
    let ids = writer_ids();
    let p = natural(&ids, 0, 1).unwrap();
    assert_eq!(p.distinct_ids, 5);
    assert_eq!(p.ids, vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"], vec!["e"]]);
    assert_exact_cover(&p.parts, ids.len());
    for (client, rows) in p.parts.iter().enumerate() {
        assert!(rows.iter().all(|&r| ids[r] == p.ids[client][0]), "client {client} holds only its writer");
    }
    assert_eq!(p.parts.iter().map(Vec::len).collect::<Vec<_>>(), [5, 3, 1, 2, 1]);
    assert_eq!(p, natural(&ids, 0, 1).unwrap(), "deterministic");
}

#[test]
fn natural_max_clients_merges_the_smallest_ids_whole_and_seeded() {
    let ids = writer_ids();
    let p = natural(&ids, 3, 7).unwrap();
    assert_eq!(p.parts.len(), 3);
    assert_exact_cover(&p.parts, ids.len());
    // The three largest writers (a 5, b 3, d 2) stay clients in first-seen order; c and e join them.
    let firsts: Vec<&str> = p.ids.iter().map(|h| h[0].as_str()).collect();
    assert_eq!(firsts, ["a", "b", "d"]);
    let mut all: Vec<&str> = p.ids.iter().flatten().map(String::as_str).collect();
    all.sort_unstable();
    assert_eq!(all, ["a", "b", "c", "d", "e"], "every writer lands whole in one client");
    for (client, rows) in p.parts.iter().enumerate() {
        assert!(rows.iter().all(|&r| p.ids[client].contains(&ids[r])));
    }
    assert_eq!(p, natural(&ids, 3, 7).unwrap(), "deterministic in the seed");
    // Over seeds, the merged ids do not always go to the same client.
    let homes: std::collections::BTreeSet<Vec<Vec<String>>> = (0..20).map(|s| natural(&ids, 3, s).unwrap().ids).collect();
    assert!(homes.len() > 1, "the seed decides where small ids go");
    // A cap above the ids changes nothing; one client takes everything.
    assert_eq!(natural(&ids, 99, 1).unwrap().parts.len(), 5);
    assert_eq!(natural(&ids, 1, 1).unwrap().parts[0].len(), ids.len());
    assert!(natural(&[], 0, 1).is_err());
}

#[test]
fn dirichlet_client_fills_every_client_at_any_alpha() {
    let l = labels();
    let n = l.len();
    for alpha in [100.0, 0.5, 0.01] {
        let parts = partition(&l, 20, 100.min(n), &Scheme::DirichletClient { alpha }, 3).unwrap();
        assert_exact_cover(&parts, n);
        let (lo, hi) = (parts.iter().map(Vec::len).min().unwrap(), parts.iter().map(Vec::len).max().unwrap());
        assert!(hi - lo <= 1, "equal sizes at alpha {alpha}: {lo}..{hi}");
        assert_eq!(parts, partition(&l, 20, 100.min(n), &Scheme::DirichletClient { alpha }, 3).unwrap(), "seeded");
    }
    // Skew grows as alpha falls: the mean number of labels a client holds.
    let held = |alpha: f64| {
        let parts = partition(&l, 20, 40, &Scheme::DirichletClient { alpha }, 3).unwrap();
        let counts = label_counts(&l, &parts, 20);
        counts.iter().map(|c| c.iter().filter(|&&x| x > 0).count()).sum::<usize>() as f64 / parts.len() as f64
    };
    let (wide, skewed) = (held(100.0), held(0.01));
    // Clients whose favoured labels run out take rows of the labels left, so a client holds a few.
    assert!(wide > 10.0 && skewed < wide / 3.0, "labels per client: alpha 100 -> {wide}, alpha 0.01 -> {skewed}");
    assert!(partition(&l, 20, 10, &Scheme::DirichletClient { alpha: 0.0 }, 3).unwrap_err().to_string().contains("partition.alpha must be > 0"));
}
