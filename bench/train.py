"""Trainer benchmarks: ``python -m bench train [--accuracy] [options]``.

1. Throughput (default): patch mode's training step on tile pairs, as the trainer runs it
   (batches drawn from uint8 tiles in memory, the same random flip/rotation on both tiles,
   the encoder's preprocessing, both encoders, heads, loss, backward, AdamW), against the
   same step on tensors already preprocessed and on the device (encoders + heads + loss +
   backward + AdamW alone). The ratio is what the input pipeline costs. Both run in this
   process on the same tiles, with the same threads; the 1-thread figure is printed beside.
   The tiles are random uint8 (the step's cost does not depend on their content).
2. ``--accuracy``: the "Measure" of docs/training.md on simulated cohorts (default
   predictability and the negative control, predictability 0): a whole ``hsafast train``
   run each, then per-tile Pearson r of patch mode's predicted positivity against the
   simulator's true Ki-67 positive fraction on held-out cases, weighted F1 of every mode
   (against the stain-derived training labels and the simulator's labels) beside its
   chance level, and the cosine similarity of paired against shuffled H&E/IHC slide
   embeddings. The truth is read here only, never by the trainer.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import Table

#: True tumour cells a tile must hold for its true positive fraction to enter the
#: correlation (as the stain benchmark scores tiles: >= 5 cells).
MIN_TRUE_CELLS = 5


# ---- throughput -------------------------------------------------------------------------
def _throughput(
    encoder: str, batch: int, steps: int, threads: int, device: str, pipeline: str
) -> dict[str, float]:
    import torch

    from hsafast.encoders.base import resize_tiles
    from hsafast.models import SlideModel
    from hsafast.trainer.config import EncoderConfig, PatchConfig, SlideConfig
    from hsafast.trainer.data import TilePairs, apply_ops, stain_jitter
    from hsafast.trainer.distributed import Dist
    from hsafast.trainer.losses import info_nce, weighted_bce
    from hsafast.trainer.patch_mode import PatchObjective, build_encoder, patch_model_config
    from hsafast.trainer.prepare import PreparedCase

    torch.set_num_threads(threads)
    he_enc = build_encoder(EncoderConfig(name=encoder), 0)
    ihc_enc = build_encoder(EncoderConfig(name=encoder), 1)
    size = 128 if he_enc.input_size <= 128 else he_enc.input_size
    model = SlideModel(patch_model_config(he_enc.dim, PatchConfig(), SlideConfig()))
    objective = PatchObjective(he_enc, ihc_enc, torch.nn.ModuleDict({"ki67": model})).to(device)
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(0)
    n = batch * 8
    tiles = rng.integers(0, 256, (2, n, size, size, 3), dtype=np.uint8)
    case = PreparedCase(
        "bench", "bench", "ki67", "low", None, 0.0,
        np.zeros((n, 2), np.int64), tiles[0], np.zeros((0, 2), np.int64), tiles[0][:0],
        tiles[1], rng.random(n).astype(np.float32), np.ones(n, np.float32), 256, "ok",
    )  # fmt: skip
    pairs = TilePairs([case])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def train_step(he: Any, ihc: Any, target: Any, weight: Any) -> None:
        z_he, z_ihc, pos = objective(he, ihc, "ki67")
        loss = info_nce(z_he, z_ihc, 0.1) + weighted_bce(pos, target, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    dali = None
    if pipeline == "dali":
        from hsafast.trainer.dali import DaliPairs

        dali = DaliPairs(batch, he_enc.mean, he_enc.std, torch.device(device).index or 0)

    def pipeline_steps(count: int) -> None:
        epoch = 0
        done = 0
        while done < count:
            for b in pairs.epoch(epoch, batch, 0, Dist(), True, PatchConfig().stain_jitter):
                if dali is None:  # as the trainer: uint8 to the device, then transform
                    ops = b.ops.to(device)
                    he, ihc = apply_ops(b.he.to(device), ops), apply_ops(b.ihc.to(device), ops)
                    if b.jitter is not None:
                        he = stain_jitter(he, b.jitter[:, 0])
                        ihc = stain_jitter(ihc, b.jitter[:, 1])
                    x_he, x_ihc = he_enc.preprocess(he), he_enc.preprocess(ihc)
                else:
                    x_he, x_ihc = (
                        resize_tiles(x, he_enc.input_size).contiguous(
                            memory_format=torch.channels_last
                        )
                        for x in dali(b.he, b.ihc, b.ops)
                    )
                train_step(x_he, x_ihc, b.target.to(device), b.weight.to(device))
                done += 1
                if done == count:
                    break
            epoch += 1
        sync()

    pre_he = he_enc.preprocess(torch.from_numpy(tiles[0][:batch])).to(device)
    pre_ihc = he_enc.preprocess(torch.from_numpy(tiles[1][:batch])).to(device)
    target = torch.rand(batch, device=device)
    weight = torch.ones(batch, device=device)

    def preloaded_steps(count: int) -> None:
        for _ in range(count):
            train_step(pre_he, pre_ihc, target, weight)
        sync()

    objective.train()
    wall: dict[str, list[float]] = {"pipeline": [], "preloaded": []}
    cpu: dict[str, list[float]] = {"pipeline": [], "preloaded": []}
    preloaded_steps(2)
    pipeline_steps(2)  # warm-up
    for _ in range(3):  # alternate, so that machine load hits both alike
        for name, fn in (("preloaded", preloaded_steps), ("pipeline", pipeline_steps)):
            time.sleep(0.3)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(steps)
            wall[name].append(steps * batch / (time.perf_counter() - t0))
            cpu[name].append(steps * batch / (time.process_time() - c0))
    pipe, pre = statistics.median(wall["pipeline"]), statistics.median(wall["preloaded"])
    pipe_cpu, pre_cpu = statistics.median(cpu["pipeline"]), statistics.median(cpu["preloaded"])
    return {
        "pipeline": pipe,
        "preloaded": pre,
        "overhead": pre / pipe - 1.0,
        "pipeline_cpu": pipe_cpu,
        "preloaded_cpu": pre_cpu,
        "overhead_cpu": pre_cpu / pipe_cpu - 1.0,
    }


def run_throughput(args: argparse.Namespace) -> None:
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    table = Table(
        "train_throughput",
        ["encoder", "device", "input", "threads", "pairs/s (trainer)", "pairs/s (preloaded)",
         "pipeline cost", "pairs/CPU-s (trainer)", "pairs/CPU-s (preloaded)", "cost (CPU)"],
    )  # fmt: skip
    runs = [("torch", t) for t in sorted({1, torch.get_num_threads()})]
    if device != "cpu":
        from hsafast.trainer.dali import dali_unavailable

        runs = [("torch", torch.get_num_threads())]
        reason = dali_unavailable(device)
        if reason is None:
            runs.append(("dali", torch.get_num_threads()))
        else:
            print(f"DALI skipped: {reason}")
    for pipeline, threads in runs:
        r = _throughput(args.encoder, args.batch, args.steps, threads, device, pipeline)
        table.add(
            args.encoder,
            card,
            pipeline,
            threads,
            r["pipeline"],
            r["preloaded"],
            f"{r['overhead']:+.1%}",
            r["pipeline_cpu"],
            r["preloaded_cpu"],
            f"{r['overhead_cpu']:+.1%}",
        )
    table.notes = {
        "batch": args.batch,
        "steps": args.steps,
        "what": "pairs/s = H&E+IHC tile pairs per second through forward, backward and AdamW; "
        "'cost' = preloaded rate / trainer rate - 1 (the input pipeline's cost); pairs/CPU-s "
        "divides by the process's CPU time (all its threads), which machine load does not "
        "inflate",
    }
    table.print()
    table.save(["torch"])


# ---- accuracy on the simulator ----------------------------------------------------------
def _weighted_f1(labels: list[str], predicted: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predicted, average="weighted", zero_division=0))


def _chance_f1(labels: list[str], predicted: list[str], rounds: int = 1000) -> float:
    """Mean weighted F1 of the same predictions against shuffled labels."""
    rng = np.random.default_rng(0)
    lab = np.array(labels)
    return float(
        np.mean([_weighted_f1(list(rng.permutation(lab)), predicted) for _ in range(rounds)])
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _mean_morphology(truth: Any, coords: np.ndarray, size: int) -> np.ndarray:
    """Per tile, the mean true morphological latent of its tumour cells (those in the IHC
    section): everything H&E shows about their expression, known exactly. Its correlation
    with the true positive fraction is the ceiling of any H&E-only predictor of the tile's
    mean state (docs/synth.md: expression = p * morphology + an invisible part)."""
    cells = truth.cells
    tumour = (cells["type"] == "tumour") & cells["in_ihc"].astype(bool)
    x, y, m = cells["he_x"][tumour], cells["he_y"][tumour], cells["morph_latent"][tumour]
    out = np.full(len(coords), np.nan)
    for k, (cx, cy) in enumerate(coords):
        inside = (x >= cx) & (x < cx + size) & (y >= cy) & (y < cy + size)
        if inside.any():
            out[k] = m[inside].mean()
    return out


def _tile_correlation(run: Path, cohort: Path) -> dict[str, float]:
    from hsafast.synth import load_truth

    tiles = _rows(run / "predictions" / "patch-tiles.csv")
    by_case: dict[str, list[dict[str, str]]] = {}
    for row in tiles:
        by_case.setdefault(row["case_id"], []).append(row)
    pred, truth, stain, weight, visible = [], [], [], [], []
    for case_id, rows in by_case.items():
        coords = np.array([[int(r["x"]), int(r["y"])] for r in rows])
        size = int(rows[0]["size_level0"])
        case_truth = load_truth(cohort, case_id)
        frac, n_tumour, *_ = case_truth.tile_counts(coords, size, space="he")
        keep = n_tumour >= MIN_TRUE_CELLS
        visible += list(_mean_morphology(case_truth, coords[keep], size))
        pred += [float(r["positivity"]) for r, k in zip(rows, keep, strict=True) if k]
        stain += [float(r["stain_target"]) for r, k in zip(rows, keep, strict=True) if k]
        weight += [float(r["target_weight"]) for r, k in zip(rows, keep, strict=True) if k]
        truth += list(frac[keep])
    predicted, true = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    targets, has_target = np.asarray(stain, np.float64), np.asarray(weight) > 0
    return {
        "tiles": float(len(true)),
        "r_predicted_vs_truth": float(np.corrcoef(predicted, true)[0, 1]),
        "r_visible_state_vs_truth": float(np.corrcoef(visible, true)[0, 1]),
        "r_stain_target_vs_truth": float(np.corrcoef(targets[has_target], true[has_target])[0, 1]),
    }


def _cosine(run: Path, mode: str) -> dict[str, float]:
    z = np.load(run / "embeddings" / f"{mode}.npz")
    test = z["split"] == "test"  # held-out cases, each embedded by its fold's model
    he = z["he"][test] / np.linalg.norm(z["he"][test], axis=1, keepdims=True)
    ihc = z["ihc"][test] / np.linalg.norm(z["ihc"][test], axis=1, keepdims=True)
    paired = np.sum(he * ihc, axis=1)
    rng = np.random.default_rng(0)
    shuffled = np.concatenate([np.sum(he * ihc[rng.permutation(len(ihc))], axis=1)
                               for _ in range(20)])  # fmt: skip
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(
        np.r_[np.ones(len(paired)), np.zeros(len(shuffled))], np.r_[paired, shuffled]
    )
    return {"paired": float(paired.mean()), "shuffled": float(shuffled.mean()), "auc": float(auc)}


def _accuracy_run(
    root: Path, predictability: float, args: argparse.Namespace
) -> tuple[dict[str, Any], float, float]:
    from hsafast.synth import load_truth, make_cohort
    from hsafast.trainer.config import TrainConfig, config_from_mapping
    from hsafast.trainer.run import train

    cohort = root / f"cohort-p{predictability:g}"
    t0 = time.perf_counter()
    make_cohort(cohort, args.cases, markers=("ki67",), slide_size=args.size,
                predictability=predictability, seed=args.seed)  # fmt: skip
    t_sim = time.perf_counter() - t0
    run = root / f"run-p{predictability:g}"
    mapping: dict[str, Any] = {
        "manifest": str(cohort / "manifest.csv"),
        "out": str(run),
        "folds": args.folds,
        "seed": args.seed,
        "patch": {"optim": {"epochs": args.patch_epochs, "batch_size": args.patch_batch}},
    }
    config = config_from_mapping(TrainConfig, mapping)
    t0 = time.perf_counter()
    summary = train(config)
    t_train = time.perf_counter() - t0
    result: dict[str, Any] = {"predictability": predictability, "modes": {}}
    result["tiles"] = _tile_correlation(run, cohort)
    for mode in config.modes:
        rows = _rows(run / "predictions" / f"{mode}.csv")
        stain = [r["label"] for r in rows]
        true = [load_truth(cohort, r["case_id"]).labels["label"] for r in rows]
        pred = [r["predicted"] for r in rows]
        result["modes"][mode] = {
            "weighted_f1_stain_labels": _weighted_f1(stain, pred),
            "weighted_f1_true_labels": _weighted_f1(true, pred),
            "chance_f1_true_labels": _chance_f1(true, pred),
            "cosine": _cosine(run, mode),
        }
    result["stain_label_agreement"] = float(np.mean([
        r["label"] == load_truth(cohort, r["case_id"]).labels["label"]
        for r in _rows(run / "predictions" / "slide.csv")
    ]))  # fmt: skip
    result["summary"] = summary.line()
    return result, t_sim, t_train


def run_accuracy(args: argparse.Namespace) -> None:
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hsafast-train-"))
    out: dict[str, Any] = {"cases": args.cases, "size": args.size, "folds": args.folds}
    table = Table(
        "train_accuracy",
        ["predictability", "mode", "wF1 (stain labels)", "wF1 (true labels)", "chance wF1",
         "cos paired", "cos shuffled", "pair AUC"],
    )  # fmt: skip
    levels = [args.predictability] + ([0.0] if args.control else [])
    for predictability in levels:
        result, t_sim, t_train = _accuracy_run(root, predictability, args)
        result.update({"simulate_seconds": t_sim, "train_seconds": t_train})
        out[f"p{predictability:g}"] = result
        for mode, m in result["modes"].items():
            cos = m["cosine"]
            table.add(
                predictability,
                mode,
                m["weighted_f1_stain_labels"],
                m["weighted_f1_true_labels"],
                m["chance_f1_true_labels"],
                cos["paired"],
                cos["shuffled"],
                cos["auc"],
            )
        t = result["tiles"]
        print(
            f"predictability {predictability:g}: patch-mode tile r vs truth "
            f"{t['r_predicted_vs_truth']:.3f} over {t['tiles']:.0f} held-out tiles "
            f"(ceiling, the true visible state: {t['r_visible_state_vs_truth']:.3f}) "
            f"(stain targets vs truth: {t['r_stain_target_vs_truth']:.3f}); "
            f"train {t_train:.0f} s, simulate {t_sim:.0f} s"
        )
    table.notes = out
    table.print()
    path = table.save(["torch"])
    print(f"cohorts and runs in {root}; results {path}")
    print(json.dumps({k: v for k, v in out.items() if k.startswith("p")}, indent=1)[:4000])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench train")
    parser.add_argument("--accuracy", action="store_true", help="the Measure on the simulator")
    parser.add_argument("--encoder", default="hsafast-cnn-s")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per repeat")
    parser.add_argument("--cases", type=int, default=36)
    parser.add_argument("--size", type=int, default=2048, help="simulated slide side (px)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--patch-epochs", type=int, default=8)
    parser.add_argument("--patch-batch", type=int, default=64)
    parser.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the negative-control cohort (predictability 0)",
    )
    parser.add_argument("--predictability", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep cohorts and runs in this folder")
    args = parser.parse_args(argv)
    if args.accuracy:
        run_accuracy(args)
    else:
        run_throughput(args)
    return 0
