"""Per-sample weights and label encoding against plain torch and scikit-learn, measured in the same run.

Run: python benchmarks/bench_sampling.py
Data: 80,000 x 16 x 16 uint8 label maps, ~93% zeros (the shared corpus if
present); 1,000,000 string labels of 50 classes; 1,000,000 single labels.
Targets (2-core CPU): sample_weights on label maps within 3x of counting
plus one torch gather-and-mean (the least any implementation must do);
encode_labels within 2x of scikit-learn's LabelEncoder on strings;
class_weight_dict within 2x of LabelEncoder + compute_class_weight.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import arc_like_labels, best_of, machine, table, verdict

import classweights


def torch_reference(labels: torch.Tensor) -> torch.Tensor:
    """Count, weigh, then one gather and a mean per sample: the baseline for label maps."""
    counts = classweights.count_labels(labels, 10)
    table_ = classweights.weights_from_counts(counts, "inverse", smooth=0, normalize=False).double()
    return table_[labels.long()].mean(dim=(1, 2)).float()


def main() -> None:
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.class_weight import compute_class_weight

    maps = torch.from_numpy(arc_like_labels())
    torch.testing.assert_close(classweights.sample_weights(maps, 10), torch_reference(maps), rtol=1e-6, atol=0)
    ours_maps = best_of(lambda: classweights.sample_weights(maps, 10), repeats=5)
    base_maps = best_of(lambda: torch_reference(maps), repeats=5)

    rng = np.random.default_rng(0)
    single = torch.from_numpy(rng.integers(0, 10, size=1_000_000))
    ours_single = best_of(lambda: classweights.sample_weights(single, 10), repeats=5)
    sampler = best_of(lambda: classweights.make_sampler(single, 10), repeats=5)

    names = np.array([f"class-{i:02d}" for i in range(50)])[rng.zipf(1.5, size=1_000_000) % 50].tolist()
    codes, classes = classweights.encode_labels(names)
    encoder = LabelEncoder().fit(names)
    assert classes == encoder.classes_.tolist() and np.array_equal(codes, encoder.transform(names))
    ours_encode = best_of(lambda: classweights.encode_labels(names), repeats=3)
    sk_encode = best_of(lambda: LabelEncoder().fit_transform(names), repeats=3)
    ours_dict = best_of(lambda: classweights.class_weight_dict(names), repeats=3)

    def sklearn_dict() -> dict:
        encoder = LabelEncoder().fit(names)
        return dict(zip(encoder.classes_, compute_class_weight("balanced", classes=encoder.classes_, y=names)))

    sk_dict = best_of(sklearn_dict, repeats=3)

    rows = [
        ["sample_weights, 80k 16x16 maps", f"{ours_maps * 1e3:.1f} ms", "count + torch gather/mean", f"{base_maps * 1e3:.1f} ms",
         f"{ours_maps / base_maps:.2f}x", "<= 3x", verdict(ours_maps / base_maps, 3, higher_is_better=False)],
        ["sample_weights, 1M single labels", f"{ours_single * 1e3:.1f} ms", "", "", "", "", ""],
        ["make_sampler, 1M single labels", f"{sampler * 1e3:.1f} ms", "", "", "", "", ""],
        ["encode_labels, 1M strings", f"{ours_encode * 1e3:.0f} ms", "LabelEncoder.fit_transform", f"{sk_encode * 1e3:.0f} ms",
         f"{ours_encode / sk_encode:.2f}x", "<= 2x", verdict(ours_encode / sk_encode, 2, higher_is_better=False)],
        ["class_weight_dict, 1M strings", f"{ours_dict * 1e3:.0f} ms", "LabelEncoder + compute_class_weight", f"{sk_dict * 1e3:.0f} ms",
         f"{ours_dict / sk_dict:.2f}x", "<= 2x", verdict(ours_dict / sk_dict, 2, higher_is_better=False)],
    ]  # fmt: skip
    print(machine())
    print(table(rows, ["ours", "time", "baseline", "time", "ours / baseline", "target", ""]))


if __name__ == "__main__":
    main()
