"""Executes a notebook headless (nbclient, the kernel of this interpreter) and writes it with its
outputs: `python run_notebook.py IN.ipynb OUT.ipynb`. A cell that raises fails the run (exit 1)."""

import os
import sys

import nbformat
from nbclient import NotebookClient

source, executed = sys.argv[1], sys.argv[2]
notebook = nbformat.read(source, as_version=4)
client = NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}})
try:
    client.execute()
finally:
    nbformat.write(notebook, executed)
