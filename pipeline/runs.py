"""A trained run as a self-describing artifact: one place that writes and loads it.

    write_model_card(run_dir, ...)      run_dir/model.json, written by the train stage
    load_ensemble(run_dir) -> Ensemble  members (ChartCNN, eval mode), normalisation, calibrations
    provenance() -> dict                commit, package versions, hardware (pipeline.provenance)

``model.json`` holds everything needed to rebuild and use the ensemble without the experiment's
YAML: the architecture (the ModelSpec's fields, not only its registry name), the input size, the
image set and label it was trained for (horizon, period or record return, and the target: the
up/down class or a regression on the return, METHOD 3.6), the normalisation, each
member's weights file with its SHA-256 and its validation-fitted calibration, the training settings
hash, the image set's fingerprint, and the provenance of the run. Weights are plain state dicts
loaded with ``torch.load(weights_only=True)``; a weights file whose hash differs from the card's,
or a card of another format version, is refused with a message naming the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from pipeline.errors import InputError
from pipeline.io import read_json, sha256_file, write_json  # sha256_file re-exported (train.transfer)
from pipeline.provenance import provenance  # re-exported: the model card's and the report's
from pipeline.models.cnn import ChartCNN, ModelSpec

MODEL_CARD = "model.json"
FORMAT = 1  # bump when the card's meaning changes; older cards are refused, not guessed at


class ModelArtifactError(InputError):
    """A run's model card or weights are missing, of another format, or do not match each other."""


def write_model_card(run_dir: Path, *, model: str, spec: ModelSpec, image_set: str, horizon: int,
                     label_return: str, chart: dict, norm: dict, calibrations: list[dict],
                     member_hashes: list[str], train_hash: str, fingerprint: dict, precision: str,
                     target: str = "class") -> Path:
    """Write run_dir/model.json for the finished members member_0..member_{k-1}. ``chart``: how the
    training images were drawn ({"window", "ma", "volume"}), so new data is drawn the same way.
    ``target``: ``train.target`` (what the output means: P(up) logits or a predicted return)."""
    members = []
    for i, (cal, trained) in enumerate(zip(calibrations, member_hashes)):
        weights = Path(run_dir) / f"member_{i}" / "best.pt"
        members.append({"weights": f"member_{i}/best.pt", "sha256": sha256_file(weights),
                        "trained": trained, "calibration": cal})
    card = {"format": FORMAT, "model": model, "spec": dataclasses.asdict(spec),
            "image_hw": list(spec.image_hw), "image_set": image_set, "horizon": horizon,
            "label_return": label_return, "target": target, "chart": chart, "norm": norm, "precision": precision,
            "train_hash": train_hash, "image_set_fingerprint": fingerprint, "members": members,
            "provenance": provenance()}
    path = Path(run_dir) / MODEL_CARD
    write_json(path, card)
    return path


def read_model_card(run_dir: str | Path) -> dict:
    """The run's model.json, checked for its format version."""
    path = Path(run_dir) / MODEL_CARD
    if not path.exists():
        raise ModelArtifactError(f"no {MODEL_CARD} in {run_dir}: it is not a finished training run "
                                 "(run `make train`; a run trained before model cards existed "
                                 "gets one when `make train` runs again)")
    card = read_json(path)
    if card.get("format") != FORMAT:
        raise ModelArtifactError(f"{path} has format {card.get('format')!r}; this version of the "
                                 f"pipeline reads format {FORMAT}: retrain the run")
    return card


def spec_from_card(card: dict) -> ModelSpec:
    """The ModelSpec recorded in a card (tuples restored from their JSON lists)."""
    fields = {f.name: f for f in dataclasses.fields(ModelSpec)}
    kw = {}
    for k, v in card["spec"].items():
        if k not in fields:
            raise ModelArtifactError(f"model card field spec.{k} is unknown to this pipeline version")
        kw[k] = tuple(v) if isinstance(v, list) else v
    return ModelSpec(**kw)


def load_weights(run_dir: Path, member: dict, spec: ModelSpec, verify: bool = True) -> ChartCNN:
    """One member's ChartCNN (CPU, eval mode) from its card entry, its weights' hash checked."""
    path = Path(run_dir) / member["weights"]
    if not path.exists():
        raise ModelArtifactError(f"{path} is missing: that member has not finished training")
    if verify and sha256_file(path) != member["sha256"]:
        raise ModelArtifactError(f"{path} does not match the SHA-256 in {Path(run_dir) / MODEL_CARD}: "
                                 "the weights were changed after training; retrain the run")
    model = ChartCNN(spec)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


@dataclass
class Ensemble:
    """A loaded run: ``members`` (ChartCNN, CPU, eval mode, best weights), the card's metadata."""

    run_dir: Path
    card: dict
    members: list[ChartCNN]
    indices: list[int]  # which of the run's members ``members`` are

    @property
    def norm(self) -> dict:
        """{"mode", "mean", "std"[, "per_year"]}: the training images' pixel statistics."""
        return self.card["norm"]

    @property
    def calibrations(self) -> list[dict]:
        """The loaded members' calibrations ({"method": "none", ...} when uncalibrated)."""
        return [self.card["members"][i]["calibration"] for i in self.indices]

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.card["image_hw"])

    @property
    def image_set(self) -> str:
        return self.card["image_set"]

    @property
    def target(self) -> str:
        """``train.target`` of the run: "class" (two logits, P(up) = softmax[:, 1]), "return" or
        "vol_adjusted_return" (one output, the predicted target). Cards written before regression
        targets existed are classifiers."""
        return self.card.get("target", "class")

    @property
    def chart(self) -> dict:
        """How the training images were drawn: {"window", "ma", "volume"}."""
        return self.card["chart"]


def member_indices(run_dir: Path) -> list[int]:
    """Indices i of the run's finished members (``member_<i>/best.pt`` present), ascending."""
    idx = sorted(int(p.parent.name.split("_", 1)[1]) for p in Path(run_dir).glob("member_*/best.pt"))
    if not idx:
        raise FileNotFoundError(f"no trained member (member_<i>/best.pt) in {run_dir}: run `make train`")
    return idx


def load_ensemble(run_dir: str | Path, members: list[int] | None = None, verify: bool = True) -> Ensemble:
    """Load a trained run from its model card (all members, or those listed)."""
    run_dir = Path(run_dir)
    card = read_model_card(run_dir)
    spec = spec_from_card(card)
    idx = list(range(len(card["members"]))) if members is None else list(members)
    for i in idx:
        if not 0 <= i < len(card["members"]):
            raise ModelArtifactError(f"{run_dir} has {len(card['members'])} members; no member {i}")
    return Ensemble(run_dir, card, [load_weights(run_dir, card["members"][i], spec, verify) for i in idx],
                    idx)


def read_predictions(path: Path, columns: list[str]) -> pd.DataFrame:
    """``columns`` of a predictions.parquet, with ``ticker`` after ``stock_id`` when the table has one
    (predictions written before tickers existed have none), so every table that lists stocks
    derived from it names them as the predictions do."""
    import pyarrow.parquet as pq

    if "ticker" in pq.read_schema(path).names and "stock_id" in columns and "ticker" not in columns:
        i = columns.index("stock_id") + 1
        columns = [*columns[:i], "ticker", *columns[i:]]
    return pd.read_parquet(path, columns=columns)


def require_current_predictions(run: Path, trained: bool = True) -> tuple[Path, Path | None]:
    """(predictions.parquet, _TRAIN_DONE.json) of a run whose predictions come from its current
    training; FileNotFoundError or StaleInputError naming the stage to rerun otherwise.

    The one rule for "predictions current" (as every stage's skip test, by hashes, not times):
    ``_PREDICT_DONE.json`` records the ``_TRAIN_DONE.json`` hash of the training it predicted
    with (``trained``), and that must be the run's training hash now. ``trained=False`` accepts
    a run folder without a training marker (predictions imported or transferred into it); the
    returned marker is then None.
    """
    from pipeline.io import StaleInputError, marker_path

    pred_path = run / "predictions.parquet"
    if not pred_path.exists():
        raise FileNotFoundError(f"{pred_path} not found: run `make predict` first")
    train_marker = marker_path(run, "_TRAIN_DONE")
    if not train_marker.exists():
        if trained:
            raise FileNotFoundError(f"{run} is not a finished training run: run `make train` first")
        return pred_path, None
    predicted = marker_path(run, "_PREDICT_DONE")
    if (not predicted.exists()
            or read_json(predicted).get("trained") != read_json(train_marker).get("hash")):
        raise StaleInputError(f"{pred_path} is unfinished or older than the trained run in {run} "
                              f"({predicted.name} does not name its training {train_marker.name}): "
                              "run `make predict` again")
    return pred_path, train_marker
