"""Prepare the data of the weekly retraining pipeline from scikit-learn's bundled breast-cancer dataset.

Writes three files into the ``ml_data`` output (nothing is downloaded):

* ``holdout.csv`` -- a fixed, curated evaluation set (the same every week): the promotion gate;
* ``train.csv`` -- this week's fresh training batch, sampled from the remaining rows (seeded by the run);
* ``to_score.csv`` -- new cases without the diagnosis, for the scoring step.

``label_noise`` (0 to 0.5) flips that share of the training labels: a broken upstream feed, used to show
that a worse challenger is not promoted.
"""

from __future__ import annotations

import hashlib

import dss_recipe
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

params = dss_recipe.params()
label_noise = float(params.get("label_noise") or 0.0)
rows = int(params.get("rows") or 300)
batch = str(params.get("batch") or "initial")
if not 0.0 <= label_noise <= 0.5:
    raise ValueError(f"label_noise must be between 0 and 0.5, got {label_noise}")

frame = load_breast_cancer(as_frame=True).frame
frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
frame.insert(0, "patient_id", [f"P{index:04d}" for index in range(len(frame))])
frame.insert(1, "clinic", np.random.default_rng(0).choice(["north", "south", "east"], size=len(frame)))

pool, holdout = train_test_split(frame, test_size=0.3, random_state=0, stratify=frame["diagnosis"])
seed = int.from_bytes(hashlib.sha256(batch.encode()).digest()[:4], "big")
rng = np.random.default_rng(seed)
train = pool.sample(n=min(rows, len(pool)), random_state=seed).reset_index(drop=True)
if label_noise > 0:
    flipped = rng.random(len(train)) < label_noise
    labels = train.loc[flipped, "diagnosis"]
    train.loc[flipped, "diagnosis"] = np.where(labels == "benign", "malignant", "benign")
    print(f"label noise: flipped {int(flipped.sum())} of {len(train)} training labels")

out = dss_recipe.output_dir("ml_data")
train.to_csv(out / "train.csv", index=False)
holdout.to_csv(out / "holdout.csv", index=False)
holdout.drop(columns=["diagnosis"]).to_csv(out / "to_score.csv", index=False)
print(f"batch {batch!r}: {len(train)} training rows, {len(holdout)} holdout rows")
dss_recipe.set_result({"train_rows": len(train), "holdout_rows": len(holdout), "label_noise": label_noise})
