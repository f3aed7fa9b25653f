"""Domain gap: how far a set of DRRs is from a set of real radiographs, in intensity, texture and spectrum.

    import datasets
    from eval.domain_gap import corpus_images, domain_gap_study, domain_gap_table, load_image_folder, plot_domain_gap

    drr = corpus_images(datasets.load_dataset("outputs/drr")["test"], views=("PA", "AP"))
    real = load_image_folder("/data/montgomery_shenzhen_sample")      # PNG, JPEG, DICOM
    study = domain_gap_study(drr, real)
    plot_domain_gap(study, "reports/domain_gap.png")
    print(domain_gap_table(study))

Why more than a histogram: on 12 real radiographs, the intensity histogram of a percentile-normalised DRR was as
close to them (1-Wasserstein 0.139) as they were to each other (0.140) (docs/anchors.md, "Domain gap, first look"),
so the report adds texture and spectrum features and a classifier two-sample test.

Every image is reduced and described by ``eval.image_features`` (grey levels at full precision, resized to
``SIDE`` x ``SIDE``, percentile-normalised; histogram, moments, entropy, edge density, high-frequency energy and
spectrum slope: that module's docstring defines each), and the sets are compared with ``eval.two_sample``.

Set-level measures (:func:`domain_gap_study`): 1-Wasserstein distance between pooled intensity distributions
(DRR vs real, next to real vs real and DRR vs DRR on seeded random halves: a gap is only a gap if it exceeds those),
standardised mean differences per feature, and a classifier two-sample test: leave-one-out nearest-centroid
balanced accuracy of telling DRR from real on the standardised scalar features (0.5 = indistinguishable), with a
permutation p-value. Per image: the distance of its standardised feature vector to the other set's centroid
(which DRRs look most real, which real images look most synthetic).

Written by hand on numpy/scipy: no library offers this report.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from chexanatomy.radiograph_io import DICOM_SUFFIXES, MIN_SIDE, PICTURE_SUFFIXES, RadiographError, read_radiograph
from chexanatomy.results import fmt as _fmt  # the one number format (missing: n/a) of cards and reports

from .image_features import HF_CUTOFF, HIST_BINS, SCALAR_FEATURES, SIDE, SLOPE_BAND, W1_BINS, describe
from .two_sample import halves_w1, histogram_w1, permutation_test, smd, standardise

Images = Mapping[str, Image.Image | np.ndarray] | Sequence[Image.Image | np.ndarray]


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def load_image_folder(path: str | Path, max_images: int | None = None) -> dict[str, Image.Image]:
    """Radiographs under ``path`` (searched recursively): PNG, JPEG and DICOM (``.dcm``, ``.dicom``).

    Each file is read by ``chexanatomy.radiograph_io.read_radiograph`` (the Space's rule: DICOM modality and VOI
    LUTs, MONOCHROME1 inverted, 16-bit min-max scaled).

    Unreadable files, and images under ``MIN_SIDE`` px per side (no anatomy to segment), are skipped and named in
    one warning.

    Args:
        path: a folder.
        max_images: stop after this many readable images (files taken in sorted path order).

    Returns:
        ``{id: PIL image}``, id = the path relative to ``path`` without suffix: mode "F", grey levels in [0, 1]
        (larger = brighter) at full precision (a 16-bit file keeps its levels).

    Raises:
        FileNotFoundError: when ``path`` is not a folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder of radiographs not found")
    suffixes = PICTURE_SUFFIXES + DICOM_SUFFIXES
    images, skipped = {}, []
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        if max_images is not None and len(images) >= max_images:
            break
        try:
            levels = read_radiograph(file)[0]
            if min(levels.shape) < MIN_SIDE:
                raise RadiographError(f"{levels.shape[1]}x{levels.shape[0]} px, under {MIN_SIDE} px per side")
            images[file.relative_to(root).with_suffix("").as_posix()] = Image.fromarray(levels)
        except Exception as err:  # noqa: BLE001 - any decoder error means "skip this file", reported below
            skipped.append(f"{file.relative_to(root)} ({type(err).__name__}: {err})")
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} unreadable file(s): {'; '.join(skipped)}", stacklevel=2)
    return images


def corpus_images(
    rows: Iterable[Mapping[str, Any]], views: Sequence[str] | None = ("PA", "AP"), max_images: int | None = None
) -> dict[str, Image.Image]:
    """``{id: image}`` from DRR corpus rows, keeping ``views`` (default frontal: real benchmarks are frontal).

    The id is ``{subject_id}/{view}/{pose_index}`` when the row has those columns, else the row index.
    """
    out = {}
    for index, row in enumerate(rows):
        if max_images is not None and len(out) >= max_images:
            break
        if views is not None and row.get("view") not in views:
            continue
        keys = ("subject_id", "view", "pose_index")
        out["/".join(str(row[k]) for k in keys) if all(k in row for k in keys) else str(index)] = row["image"]
    return out


# --------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------


def _named(images: Images, prefix: str) -> dict[str, Image.Image | np.ndarray]:
    if isinstance(images, Mapping):
        return dict(images)
    return {f"{prefix}_{i}": image for i, image in enumerate(images)}


def _feature_stats(drr: np.ndarray, real: np.ndarray) -> dict[str, dict[str, float]]:
    """Per scalar feature: each set's mean and sample std (sets have >= 2 images), and the SMD DRR - real."""
    out = {}
    for k, name in enumerate(SCALAR_FEATURES):
        a, b = drr[:, k], real[:, k]
        out[name] = {
            "drr_mean": float(a.mean()),
            "drr_std": float(a.std(ddof=1)),
            "real_mean": float(b.mean()),
            "real_std": float(b.std(ddof=1)),
            "smd": smd(a, b),
        }
    return out


def _per_image(names: list[tuple[str, str]], features: list[dict], z: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Each image's features and its distances to the other set's and its own set's centroid (z units)."""
    centroids = np.stack([z[labels == c].mean(axis=0) for c in (0, 1)])
    out = []
    for (kind, image_id), feats, vector, label in zip(names, features, z, labels, strict=True):
        out.append(
            {
                "set": kind,
                "id": image_id,
                **feats,
                "distance_to_other": float(np.linalg.norm(vector - centroids[1 - label])),
                "distance_to_own": float(np.linalg.norm(vector - centroids[label])),
            }
        )
    return out


def _curves(features: dict[str, list[dict]], spectra: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean 64-bin histogram and geometric-mean radial power spectrum of each set, for plots."""
    curves: dict[str, Any] = {
        "histogram_edges": np.linspace(0, 1, HIST_BINS + 1).tolist(),
        "frequency": (np.arange(1, SIDE // 2 + 1) / SIDE).tolist(),
    }
    for kind in features:
        curves[f"{kind}_histogram"] = np.mean([f["histogram"] for f in features[kind]], axis=0).tolist()
        curves[f"{kind}_spectrum"] = np.exp(np.log(spectra[kind] + 1e-30).mean(axis=0)).tolist()
    return curves


def domain_gap_study(
    drr_images: Images, real_images: Images, n_permutations: int = 200, seed: int = 0
) -> dict[str, Any]:
    """How far DRRs are from real radiographs.

    Args:
        drr_images: DRRs as ``{id: image}`` or a list (ids ``drr_0``, ...); PIL (any mode) or arrays [H, W].
        real_images: real radiographs, the same way (ids ``real_0``, ...); e.g. :func:`load_image_folder`.
        n_permutations: label shuffles for the classifier test's p-value.
        seed: for the permutations and the random halves.

    Returns:
        A JSON-serialisable dict::

            {"summary": {"n_drr", "n_real",
                         "histogram_w1_drr_vs_real", "histogram_w1_real_vs_real", "histogram_w1_drr_vs_drr",
                         "classifier_accuracy" (balanced, LOO nearest centroid), "classifier_p_value",
                         "classifier_null_mean", "n_permutations",
                         "features": {name: {"drr_mean", "drr_std", "real_mean", "real_std", "smd"}},
                         "settings": {...}},
             "per_image": [{"set": "drr" | "real", "id", "histogram", <scalar features>, "distance_to_other",
                            "distance_to_own"}],
             "curves": {"histogram_edges", "drr_histogram", "real_histogram", "frequency", "drr_spectrum",
                        "real_spectrum"}}

        W1 values are in normalised intensity units ([0, 1]); the within-set values compare two random halves.

    Raises:
        ValueError: when either set has fewer than 2 images.
    """
    sets = {"drr": _named(drr_images, "drr"), "real": _named(real_images, "real")}
    for kind, images in sets.items():
        if len(images) < 2:
            raise ValueError(f"{kind}_images has {len(images)} image(s); the leave-one-out test needs at least 2")
    described = {kind: [describe(im) for im in images.values()] for kind, images in sets.items()}
    features = {kind: [d[0] for d in ds] for kind, ds in described.items()}
    fine = {kind: np.stack([d[1] for d in ds]) for kind, ds in described.items()}
    matrix = {kind: np.array([[f[n] for n in SCALAR_FEATURES] for f in feats]) for kind, feats in features.items()}
    labels = np.repeat([0, 1], [len(sets["drr"]), len(sets["real"])])  # 0 = DRR, 1 = real
    z = standardise(np.concatenate([matrix["drr"], matrix["real"]]))
    test = permutation_test(z, labels, n_permutations, seed)
    rng = np.random.default_rng(seed)
    summary = {
        "n_drr": len(sets["drr"]),
        "n_real": len(sets["real"]),
        "histogram_w1_drr_vs_real": histogram_w1(fine["drr"], fine["real"]),
        "histogram_w1_real_vs_real": halves_w1(fine["real"], rng),
        "histogram_w1_drr_vs_drr": halves_w1(fine["drr"], rng),
        "classifier_accuracy": test["accuracy"],
        "classifier_p_value": test["p_value"],
        "classifier_null_mean": test["null_mean"],
        "n_permutations": n_permutations,
        "features": _feature_stats(matrix["drr"], matrix["real"]),
        "settings": {
            "side": SIDE,
            "hist_bins": HIST_BINS,
            "w1_bins": W1_BINS,
            "hf_cutoff_cycles_per_px": HF_CUTOFF,
            "slope_band_cycles_per_px": list(SLOPE_BAND),
            "percentiles": [1, 99],
            "seed": seed,
        },
    }
    names = [(kind, image_id) for kind, images in sets.items() for image_id in images]
    per_image = _per_image(names, features["drr"] + features["real"], z, labels)
    curves = _curves(features, {kind: np.stack([d[2] for d in ds]) for kind, ds in described.items()})
    rows = [
        {"feature": name, "drr_mean": f["drr_mean"], "real_mean": f["real_mean"], "smd": f["smd"]}
        for name, f in summary["features"].items()
    ]
    return {"summary": summary, "rows": rows, "per_image": per_image, "curves": curves}


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------

COLOURS = {"drr": "tab:blue", "real": "tab:orange"}


def _plot_curves(fig, grid, curves: Mapping[str, Any]) -> None:
    hist_ax, spec_ax = fig.add_subplot(grid[0, :2]), fig.add_subplot(grid[0, 2:])
    centres = np.convolve(curves["histogram_edges"], [0.5, 0.5], mode="valid")
    for kind, colour in COLOURS.items():
        hist_ax.plot(centres, curves[f"{kind}_histogram"], color=colour, label=kind)
        spec_ax.loglog(curves["frequency"], curves[f"{kind}_spectrum"], color=colour, label=kind)
    hist_ax.set(title="mean intensity histogram", xlabel="normalised intensity", ylabel="share of pixels")
    spec_ax.set(title="radial power spectrum (geometric mean)", xlabel="cycles / pixel", ylabel="power")
    spec_ax.axvline(HF_CUTOFF, color="grey", linestyle=":", linewidth=1)
    hist_ax.legend()


def _plot_features(fig, grid, per_image: Sequence[Mapping[str, Any]]) -> None:
    for k, name in enumerate(SCALAR_FEATURES):
        ax = fig.add_subplot(grid[1 + k // 4, k % 4])
        groups = [[r[name] for r in per_image if r["set"] == kind] for kind in COLOURS]
        ax.boxplot(groups, tick_labels=list(COLOURS), showfliers=False)
        for i, (values, colour) in enumerate(zip(groups, COLOURS.values(), strict=True)):
            jitter = np.random.default_rng(k).uniform(-0.12, 0.12, len(values))
            ax.scatter(np.full(len(values), i + 1.0) + jitter, values, s=8, color=colour, alpha=0.7)
        ax.set_title(name, fontsize=9)


def plot_domain_gap(study: Mapping[str, Any], path: str | Path) -> Path:
    """Overlaid mean histograms and power spectra (top), one box plot with points per scalar feature (below).

    Returns:
        The written image path (format from the suffix, e.g. ``.png``).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    fig = Figure(figsize=(13, 9), layout="constrained")
    grid = fig.add_gridspec(3, 4)
    _plot_curves(fig, grid, study["curves"])
    _plot_features(fig, grid, study["per_image"])
    s = study["summary"]
    fig.suptitle(
        f"DRR ({s['n_drr']}) vs real ({s['n_real']}): classifier accuracy {s['classifier_accuracy']:.2f} "
        f"(p = {s['classifier_p_value']:.3f}), W1 {s['histogram_w1_drr_vs_real']:.3f}"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def domain_gap_table(study: Mapping[str, Any], closest: int = 3) -> str:
    """Markdown: set-level distances, the classifier test, per-feature statistics, and the most real-looking DRRs.

    Args:
        study: a :func:`domain_gap_study` result.
        closest: how many DRRs nearest to the real centroid (and real images nearest the DRR centroid) to list.
    """
    s = study["summary"]
    lines = [
        f"DRR images: {s['n_drr']}, real images: {s['n_real']}",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| intensity W1, DRR vs real | {_fmt(s['histogram_w1_drr_vs_real'])} |",
        f"| intensity W1, real vs real (halves) | {_fmt(s['histogram_w1_real_vs_real'])} |",
        f"| intensity W1, DRR vs DRR (halves) | {_fmt(s['histogram_w1_drr_vs_drr'])} |",
        f"| classifier balanced accuracy (0.5 = indistinguishable) | {_fmt(s['classifier_accuracy'], 2)} |",
        f"| permutation p-value ({s['n_permutations']} shuffles) | {_fmt(s['classifier_p_value'])} |",
        "",
        "| feature | DRR mean ± sd | real mean ± sd | SMD |",
        "|---|---:|---:|---:|",
    ]
    for name, f in s["features"].items():
        lines.append(
            f"| {name} | {f['drr_mean']:.3g} ± {f['drr_std']:.2g} | {f['real_mean']:.3g} ± "
            f"{f['real_std']:.2g} | {f['smd']:+.2f} |"
        )
    for kind, other in (("drr", "real"), ("real", "drr")):
        ranked = sorted((r for r in study["per_image"] if r["set"] == kind), key=lambda r: r["distance_to_other"])
        listed = ", ".join(f"{r['id']} ({r['distance_to_other']:.2f})" for r in itertools.islice(ranked, closest))
        lines += ["", f"{kind} images closest to the {other} centroid (z units): {listed}"]
    return "\n".join(lines) + "\n"


__all__ = ["corpus_images", "domain_gap_study", "domain_gap_table", "load_image_folder", "plot_domain_gap"]
