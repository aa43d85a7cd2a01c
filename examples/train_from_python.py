"""A whole sparsecl run from Python: ``sparsecl.train(config)`` returns the summary (also in summary.json).

SparCL-DER++ on five digit tasks (Class-IL) at 90 % weight sparsity, the same run as
``sparsecl train dataset=digits tasks=5 method=derpp ...`` on the command line.
Run: python examples/train_from_python.py
"""

import tempfile

import sparsecl

config = {
    "dataset": "digits", "model": "mlp", "tasks": 5, "epochs": 5, "batch_size": 32, "lr": 0.05, "momentum": 0.9,
    "method": "derpp", "buffer_size": 200, "alpha": 0.3, "beta": 0.5,
    "sparsity.density": 0.1, "sparcl.tdm": True, "sparcl.ddr": True, "sparcl.dgm": True,
    "progress": False, "checkpoint.at_task_end": False, "checkpoint.keep_model": False,
}
with tempfile.TemporaryDirectory() as out:
    summary = sparsecl.train(config, out, stream_out=lambda line: None)
print(f"density {summary['density']['overall']:.4f}")
print(f"Class-IL accuracy after 5 tasks {summary['final_avg_acc']['class_il']:.2f}")
