"""Run under `accelerate launch`: `select_by_proxies` on the toy sources; each process writes what it chose."""

import json
import os
import sys

import transformers

sys.path.insert(0, os.path.dirname(__file__))
from toy import ToyClassifier, toy_sources  # noqa: E402

from cads_hf import CADSConfig, select_by_proxies  # noqa: E402

transformers.logging.set_verbosity_error()
output_dir = sys.argv[1]
sources, validation = toy_sources(sizes=(300, 300, 300), noise=(0.0, 0.2, 1.0))
args = CADSConfig(
    output_dir=output_dir, compute_budget=9000, per_device_train_batch_size=16, learning_rate=1e-2,
    lr_scheduler_type="constant", report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
)
mixture = select_by_proxies(lambda: ToyClassifier(seed=0), sources, validation, args)
with open(os.path.join(output_dir, f"rank{args.process_index}.json"), "w") as f:
    json.dump({"world_size": args.world_size, "ratios": mixture.ratios, "candidates": mixture.config["candidates"],
               "source_values": mixture.config["source_values"]}, f)
