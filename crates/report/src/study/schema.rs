//! What `study.json` holds: how a study is judged and presented, its points, the claims it tests
//! and the verdicts. Plain serde types; the judging is in `verdicts`, the report in `render`.

use serde::{Deserialize, Serialize};

use crate::summary::Summary;

/// A claim of the paper that a study can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    /// PEFT's gap to FFT widens as client data grow more heterogeneous.
    GapGrows,
    /// SLoRA's initialisation closes that gap.
    SloraClosesGap,
    /// SLoRA cuts training time (up to 90 %).
    TimeCut,
    /// More local work per round (client drift) widens LoRA's gap to FFT (LoRA-A²'s mechanism).
    DriftOpensGap,
    /// Under heterogeneous client ranks FlexLoRA beats zero-padded averaging (Bai et al., 2024).
    FlexloraBeatsZeroPadding,
    /// Heterogeneous client ranks cost accuracy against every client at one rank.
    MixedRanksCost,
    /// SLoRA's uploads reveal less about a client's data than FFT's (the audit's attacks).
    SloraLeaksLess,
    /// Under client-level DP SLoRA loses less accuracy than FFT (its uploads carry less noise).
    SloraLosesLessUnderDp,
}

impl Claim {
    /// The claim in words.
    pub fn statement(self) -> &'static str {
        match self {
            Claim::GapGrows => "PEFT (LoRA) falls further behind FFT as client data grow more heterogeneous",
            Claim::SloraClosesGap => "SLoRA closes LoRA's gap to FFT (Stage 1 at about 1 % density)",
            Claim::TimeCut => "SLoRA cuts the training time to a target accuracy (up to 90 %)",
            Claim::DriftOpensGap => "More local epochs per round (client drift) widen LoRA's gap to FFT",
            Claim::FlexloraBeatsZeroPadding => "With heterogeneous client ranks, FlexLoRA beats zero-padded LoRA averaging (HetLoRA's naive scheme)",
            Claim::MixedRanksCost => "Heterogeneous client ranks cost accuracy against every client at one rank (judged on zero-padded LoRA)",
            Claim::SloraLeaksLess => "SLoRA's uploads reveal less about a client's data (tokens, labels, dominant label) than FFT's, to an honest but curious server",
            Claim::SloraLosesLessUnderDp => "Under client-level DP (DP-FedAvg) SLoRA loses less accuracy than FFT: the noise lands only on what a method sends",
        }
    }
}

/// What a study concluded about one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The intervals support the claim.
    Reproduced,
    /// The intervals contradict it (or show no effect worth the margin).
    NotReproduced,
    /// The intervals cannot tell.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// One claim's verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimVerdict {
    /// The claim.
    pub claim: Claim,
    /// The verdict.
    pub verdict: Verdict,
    /// The numbers and the rule that decided, in one or two sentences.
    pub evidence: String,
}

/// One point of a study and the summary of its (replicated) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyPoint {
    /// Short label for axes and table headers.
    pub label: String,
    /// A numeric axis value (e.g. the Stage-1 density), when the axis is numeric.
    #[serde(default)]
    pub value: Option<f64>,
    /// Beyond the range the claims are about (e.g. one label per client): shown, not used in verdicts.
    #[serde(default)]
    pub extreme: bool,
    /// The `--set` overrides that define the point.
    pub overrides: Vec<(String, String)>,
    /// `run.name` of the point's run.
    pub run_name: String,
    /// The run's summary.
    pub summary: Summary,
    /// Which per-seed accuracy the verdicts and paired differences use.
    #[serde(default)]
    pub statistic: Statistic,
}

/// The per-seed accuracy a study judges on, stated in the study file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Statistic {
    /// The last round, on every test row. With partial participation at high skew it measures
    /// which clients came last.
    #[default]
    Final,
    /// The mean of the rounds measured on every test row: the last `federation.full_test_last_k`
    /// (the last round alone where a run measured only that).
    LastKFull,
}

/// What the points vary, which decides the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudyAxis {
    /// Label heterogeneity (categorical, least to most heterogeneous).
    Heterogeneity,
    /// Stage-1 density (accuracy against total upload).
    Density,
    /// The privacy budget ε (no DP first).
    Privacy,
    /// One setting (no axis).
    Single,
}

impl StudyAxis {
    /// The x-axis title of the study's per-point figures.
    pub fn title(self) -> &'static str {
        match self {
            StudyAxis::Heterogeneity => "Label heterogeneity across clients (least to most)",
            StudyAxis::Density => "Stage-1 setting (study point)",
            StudyAxis::Privacy => "Privacy budget (ε at δ = 1 / clients; ∞ = no DP)",
            StudyAxis::Single => "Setting",
        }
    }
}

/// How a study is judged and presented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySettings {
    /// Study name (report folder).
    pub name: String,
    /// One-line description.
    pub title: String,
    /// What the points vary.
    pub axis: StudyAxis,
    /// Claims tested.
    pub claims: Vec<Claim>,
    /// Differences smaller than this (percentage points) do not count as an effect.
    pub margin_pp: f64,
    /// Label of the point claims 2 and 3 are judged at (default: the last non-extreme point).
    pub claim_point: Option<String>,
    /// FFT's mean curve counts as flat when its last-k slope is below this (pp per round).
    pub flat_slope_pp: f64,
    /// The command that reproduces the study.
    pub command: String,
    /// `drift-opens-gap`: pairs of point labels `[less local work, more local work]` at the same
    /// partition; the verdict is judged on the last pair (the most skewed).
    #[serde(default)]
    pub drift_pairs: Vec<(String, String)>,
    /// `flexlora-beats-zero-padding` and `mixed-ranks-cost`: pairs of point labels `[uniform rank,
    /// heterogeneous ranks]`; both are judged on the last pair.
    #[serde(default)]
    pub rank_pairs: Vec<(String, String)>,
    /// `slora-leaks-less` and `slora-loses-less-under-dp`: pairs of point labels `[no DP, DP]` at the
    /// same setting. Leakage is judged at the first label of the first pair; the accuracy lost to DP
    /// at each pair, the verdict at the last (the strictest ε).
    #[serde(default)]
    pub privacy_pairs: Vec<(String, String)>,
    /// Claim 1's contrast, stated in the study file before the run.
    #[serde(default)]
    pub gap_contrast: GapContrast,
    /// Chance accuracy (1 / labels), when known: claim 1 leaves out points where FFT is within
    /// `floor_pp` of it, and gives the gap relative to FFT's accuracy above chance.
    #[serde(default)]
    pub chance: Option<f64>,
    /// See `chance` (percentage points).
    #[serde(default = "default_floor_pp")]
    pub floor_pp: f64,
}

fn default_floor_pp() -> f64 {
    3.0
}

/// How claim 1 contrasts the gap across heterogeneity levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapContrast {
    /// The most heterogeneous regular point minus the least (the committed small-budget studies).
    #[default]
    Ends,
    /// Per seed, the least-squares slope of the gap over every regular point (by position), judged
    /// on the change it implies from the first point to the last.
    Slope,
}

/// `study.json`: settings, points and verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    /// How the study was judged.
    pub settings: StudySettings,
    /// Points in study order.
    pub points: Vec<StudyPoint>,
    /// One verdict per tested claim.
    pub verdicts: Vec<ClaimVerdict>,
    /// The cost plan's estimate next to the measured time, per point and method.
    #[serde(default)]
    pub plan: Vec<PlanRow>,
}

/// A cost plan's estimate for one method at one point (seeds summed), and what the runs took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    /// Point label (or `tune`).
    pub point: String,
    /// Method id (`slora` covers both stages).
    pub method: String,
    /// Seeds summed.
    pub seeds: usize,
    /// Estimated seconds (`pipeline study --plan`).
    pub estimated_seconds: f64,
    /// The runs' recorded wall time (training and evaluation), when known.
    pub measured_seconds: Option<f64>,
}
