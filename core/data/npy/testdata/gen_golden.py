#!/usr/bin/python3
"""Writes the golden .npy files the npy tests compare against.

Run with Debian's numpy (the interpreter first on PATH may lack it):

    cd core/data/npy/testdata && /usr/bin/python3 gen_golden.py

Values are simple formulas the Go tests recompute independently.
"""
import numpy as np
import numpy.lib.format as fmt

def save(name, a):
    np.save(name, a, allow_pickle=False)

def save_version(name, a, version):
    with open(name, "wb") as f:
        fmt.write_array(f, a, version=version, allow_pickle=False)

# int32 [2, 3]: i*10 + j - 7 (negative values check sign handling).
save("i4_2x3.npy", np.array([[i * 10 + j - 7 for j in range(3)] for i in range(2)], dtype="<i4"))
# uint8 [2, 5]: (i*5 + j) * 50 mod 256.
save("u1_2x5.npy", np.array([[((i * 5 + j) * 50) % 256 for j in range(5)] for i in range(2)], dtype=np.uint8))
# float32 [4]: k / 8 - 0.25.
save("f4_4.npy", np.array([k / 8 - 0.25 for k in range(4)], dtype="<f4"))
# float64 [3, 1, 2]: k * 1.5 - 2 for the flat index k.
save("f8_3x1x2.npy", (np.arange(6, dtype="<f8") * 1.5 - 2).reshape(3, 1, 2))
# bool [5]: k % 2 == 0.
save("b1_5.npy", np.array([k % 2 == 0 for k in range(5)], dtype=np.bool_))
# 0-d int32 scalar 42.
save("i4_scalar.npy", np.array(42, dtype="<i4"))
# Empty int32 [0, 7].
save("i4_0x7.npy", np.zeros((0, 7), dtype="<i4"))
# A wide first dimension changes the growth padding: int32 [1234567, 0].
save("i4_1234567x0.npy", np.zeros((1234567, 0), dtype="<i4"))
# Fortran order int32 [2, 3]: element [i, j] = i*10 + j.
save("i4_fortran_2x3.npy", np.asfortranarray(np.array([[i * 10 + j for j in range(3)] for i in range(2)], dtype="<i4")))
# Big-endian int32 [3]: 1, -2, 300000.
save("i4_be_3.npy", np.array([1, -2, 300000], dtype=">i4"))
# int64 [3]: 1, -2, 2**40.
save("i8_3.npy", np.array([1, -2, 2**40], dtype="<i8"))
# int16 [2]: -300, 300.
save("i2_2.npy", np.array([-300, 300], dtype="<i2"))
# Versions 2.0 and 3.0 of int32 [2, 3] as above.
a = np.array([[i * 10 + j - 7 for j in range(3)] for i in range(2)], dtype="<i4")
save_version("i4_2x3_v2.npy", a, (2, 0))
save_version("i4_2x3_v3.npy", a, (3, 0))
