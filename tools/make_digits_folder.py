#!/usr/bin/env python3
"""Writes scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; UCI
"Optical Recognition of Handwritten Digits", shipped inside the scikit-learn wheel, no
download) as an image folder of 32x32 PNGs that the `train` program reads:

    DIR/train/<digit>/<index>.png   (1,437 images)
    DIR/valid/<digit>/<index>.png   (360 images)

Pinned versions: tools/requirements.txt (scikit-learn==1.9.1, pillow==13.0.0, numpy==2.4.6).
The split is scikit-learn's stratified `train_test_split(test_size=0.2, random_state=0)`;
each 8x8 image (values 0-16) is scaled to 0-255, enlarged 4x by pixel replication (no
interpolation, so the PNG is a pure function of the data) and stored as RGB (three equal
channels). The tree is about 7 MB on disk; it is generated on demand, not committed.

    python tools/make_digits_folder.py runs/digits32
    cargo run --release --example train -- --dataset folder --data-dir runs/digits32 --image-size 32
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR")
    out = Path(sys.argv[1])
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
    index = np.arange(len(images))
    train, valid = train_test_split(
        index, test_size=0.2, random_state=0, stratify=digits.target
    )
    for split, ids in (("train", train), ("valid", valid)):
        for i in sorted(ids):
            big = np.kron(images[i], np.ones((4, 4), np.uint8))
            rgb = np.repeat(big[:, :, None], 3, axis=2)
            d = out / split / str(digits.target[i])
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb, "RGB").save(d / f"{i:04d}.png")
    print(f"{out}: {len(train)} training and {len(valid)} validation images, 32x32, 10 classes")


if __name__ == "__main__":
    main()
