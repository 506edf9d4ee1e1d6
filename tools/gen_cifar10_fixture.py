"""Write tiny CIFAR-10 binary-format fixtures for the reader tests (pure Python, no deps).

Format (https://www.cs.toronto.edu/~kriz/cifar.html, binary version): each file is a sequence
of 3073-byte records, a label byte (0-9) then 1024 red, 1024 green and 1024 blue bytes of a
32x32 image, row-major.

Outputs under crates/training/tests/fixtures/cifar10/:
  cifar-10-batches-bin/data_batch_{1..5}.bin  3 records each (15 training images)
  cifar-10-batches-bin/test_batch.bin         4 records
  truncated/ the same files, but data_batch_3.bin cut in the middle of its second record
  bad_label/ the same files, but test_batch.bin's first label is 12

Pixel (c, y, x) of global record n is (n * 31 + c * 67 + y * 5 + x * 3) % 256 and its label is
n % 10, so the test can check every byte.
"""

import os

ROOT = os.path.join(
    os.path.dirname(__file__), "..", "crates", "training", "tests", "fixtures", "cifar10"
)


def record(n):
    pixels = bytes((n * 31 + c * 67 + y * 5 + x * 3) % 256 for c in range(3) for y in range(32) for x in range(32))
    return bytes([n % 10]) + pixels


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main():
    files = {}
    n = 0
    for b in range(1, 6):
        files[f"data_batch_{b}.bin"] = b"".join(record(n + i) for i in range(3))
        n += 3
    files["test_batch.bin"] = b"".join(record(100 + i) for i in range(4))
    for variant in ["cifar-10-batches-bin", "truncated", "bad_label"]:
        for name, data in files.items():
            if variant == "truncated" and name == "data_batch_3.bin":
                data = data[: 3073 + 1500]
            if variant == "bad_label" and name == "test_batch.bin":
                data = bytes([12]) + data[1:]
            write(os.path.join(ROOT, variant), name, data)
    print("wrote", ROOT)


if __name__ == "__main__":
    main()
