"""Copy onnxruntime/capi/libonnxruntime.so.* out of a wheel into a directory (used by `make ort-compat`)."""

import pathlib
import sys
import zipfile

wheel, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if "/capi/libonnxruntime.so" in n]
    if not names:
        sys.exit(f"{wheel} holds no libonnxruntime.so")
    for name in names:
        (dest / pathlib.Path(name).name).write_bytes(archive.read(name))
        print(f"{wheel.name}: {pathlib.Path(name).name} -> {dest}")
