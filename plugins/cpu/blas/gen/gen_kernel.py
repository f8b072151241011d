# Generates plugins/cpu/blas/kernel_amd64.s:
#   cd plugins/cpu/blas && python3 gen/gen_kernel.py > kernel_amd64.s
import struct
out=[]
w=out.append
w('''//go:build amd64 && !purego

#include "textflag.h"

// The micro-kernels share one shape; their k loops are unrolled
// four times.
''')

def body(step, a_operand):
    # one k step: B row at step*64(DI), A values via a_operand(row, step)
    s=[]
    s.append(f"\tVMOVUPS      {step*64}(DI), Y0")
    s.append(f"\tVMOVUPS      {step*64+32}(DI), Y1")
    for pair in range(3):
        r0, r1 = 2*pair, 2*pair+1
        s.append(f"\tVBROADCASTSS {a_operand(r0, step)}, Y2")
        s.append(f"\tVBROADCASTSS {a_operand(r1, step)}, Y3")
        acc0 = 4+2*r0
        acc1 = 4+2*r1
        s.append(f"\tVFMADD231PS  Y0, Y2, Y{acc0}")
        s.append(f"\tVFMADD231PS  Y1, Y2, Y{acc0+1}")
        s.append(f"\tVFMADD231PS  Y0, Y3, Y{acc1}")
        s.append(f"\tVFMADD231PS  Y1, Y3, Y{acc1+1}")
    return s

def off(o, base):
    return f"{o}({base})" if o else f"({base})"

def packed_a(row, step):
    return off(4*(step*6+row), "SI")

def strided_a(row, step):
    o = 4*row
    base, idx = [("SI", ""), ("SI", "(R9*1)"), ("SI", "(R9*2)"), ("R10", "")][step]
    return (f"{o}({base})" if o else f"({base})") + idx

def direct_a(row, step):
    o = 4*step
    base = ["SI", "SI", "SI", "R10", "R10", "R10"][row]
    idx = ["", "(R9*1)", "(R9*2)", "", "(R9*1)", "(R9*2)"][row]
    return (f"{o}({base})" if o else f"({base})") + idx

def store(prefix):
    s=[]
    s.append(f"{prefix}store:")
    s.append("\tVBROADCASTSS alpha+ALPHA(FP), Y0")
    for i in range(4,16):
        s.append(f"\tVMULPS       Y0, Y{i}, Y{i}")
    s.append("\tMOVL         beta+BETA(FP), AX")
    s.append("\tTESTL        AX, AX")
    s.append(f"\tJZ           {prefix}overwrite")
    s.append("\tVBROADCASTSS beta+BETA(FP), Y1")
    for r in range(6):
        if r: s.append("\tADDQ         R8, DX")
        s.append(f"\tVFMADD231PS  (DX), Y1, Y{4+2*r}")
        s.append(f"\tVFMADD231PS  32(DX), Y1, Y{5+2*r}")
        s.append(f"\tVMOVUPS      Y{4+2*r}, (DX)")
        s.append(f"\tVMOVUPS      Y{5+2*r}, 32(DX)")
    s.append("\tVZEROUPPER")
    s.append("\tRET")
    s.append("")
    s.append(f"{prefix}overwrite:")
    for r in range(6):
        if r: s.append("\tADDQ    R8, DX")
        s.append(f"\tVMOVUPS Y{4+2*r}, (DX)")
        s.append(f"\tVMOVUPS Y{5+2*r}, 32(DX)")
    s.append("\tVZEROUPPER")
    s.append("\tRET")
    return s

def kernel(name, doc, args, prologue, a_operand, a_step4, a_step1, frame, alpha_off, beta_off, prefix):
    w(doc)
    w(f"TEXT ·{name}(SB), NOSPLIT, $0-{frame}")
    for l in prologue: w(l)
    for i in range(4,16):
        w(f"\tVXORPS Y{i}, Y{i}, Y{i}")
    w("")
    w("\tCMPQ CX, $4")
    w(f"\tJLT  {prefix}tail")
    w("")
    w(f"{prefix}loop4:")
    for st in range(4):
        for l in body(st, a_operand): w(l)
    for l in a_step4: w(l)
    w("\tADDQ $256, DI")
    w("\tSUBQ $4, CX")
    w("\tCMPQ CX, $4")
    w(f"\tJGE  {prefix}loop4")
    w("")
    w(f"{prefix}tail:")
    w("\tTESTQ CX, CX")
    w(f"\tJZ    {prefix}store")
    w("")
    w(f"{prefix}loop1:")
    for l in body(0, a_operand): w(l)
    for l in a_step1: w(l)
    w("\tADDQ $64, DI")
    w("\tDECQ CX")
    w(f"\tJNZ  {prefix}loop1")
    w("")
    for l in store(prefix):
        w(l.replace("ALPHA", str(alpha_off)).replace("BETA", str(beta_off)))
    w("")

kernel("sgemm6x16",
'''// func sgemm6x16(k int, a *float32, astep int, b, c *float32, ldc int, alpha, beta float32)
//
// a: k steps of 6 floats, astep floats apart (6 for a packed panel, lda for
// a transposed A read in place); b: k steps of 16 packed floats. The 6×16
// product accumulates in Y4..Y15 (row i in Y(4+2i), Y(5+2i)), then
// c[i*ldc+j] = alpha*acc + beta*c[i*ldc+j] (c not read when beta is +0).''',
None,
["\tMOVQ k+0(FP), CX", "\tMOVQ a+8(FP), SI", "\tMOVQ astep+16(FP), R9", "\tSHLQ $2, R9", "\tLEAQ (SI)(R9*2), R10", "\tADDQ R9, R10",
 "\tMOVQ b+24(FP), DI", "\tMOVQ c+32(FP), DX", "\tMOVQ ldc+40(FP), R8", "\tSHLQ $2, R8", ""],
strided_a, ["\tLEAQ (SI)(R9*4), SI", "\tLEAQ (R10)(R9*4), R10"], ["\tADDQ R9, SI"], 56, 48, 52, "p_")

kernel("sgemm6x16Direct",
'''// func sgemm6x16Direct(k int, a *float32, lda int, b, c *float32, ldc int, alpha, beta float32)
//
// As sgemm6x16 but A is read in place: six rows lda floats apart, k
// consecutive floats each, which saves packing row-major A.''',
None,
["\tMOVQ k+0(FP), CX", "\tMOVQ a+8(FP), SI", "\tMOVQ lda+16(FP), R9", "\tSHLQ $2, R9", "\tLEAQ (SI)(R9*2), R10", "\tADDQ R9, R10",
 "\tMOVQ b+24(FP), DI", "\tMOVQ c+32(FP), DX", "\tMOVQ ldc+40(FP), R8", "\tSHLQ $2, R8", ""],
direct_a, ["\tADDQ $16, SI", "\tADDQ $16, R10"], ["\tADDQ $4, SI", "\tADDQ $4, R10"], 56, 48, 52, "d_")

# exp
w('''// func expShiftedAVX2(dst, src *float32, n int, shift, scale float32, c *float32) float64
//
// dst[i] = exp((src[i]-shift)*scale) for n (a multiple of 8) floats, the
// same range reduction and polynomial as expf; returns the sum of the
// results, accumulated per lane in float64. c holds the constants:
// lo, hi, log2e, ln2hi, ln2lo, p0..p5, 1.
TEXT ·expShiftedAVX2(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	MOVQ         c+32(FP), R8
	VBROADCASTSS shift+24(FP), Y13
	VBROADCASTSS scale+28(FP), Y12
	VBROADCASTSS 0(R8), Y8
	VBROADCASTSS 4(R8), Y7
	VBROADCASTSS 8(R8), Y11
	VBROADCASTSS 12(R8), Y10
	VBROADCASTSS 16(R8), Y9
	VBROADCASTSS 44(R8), Y6
	VXORPD       Y14, Y14, Y14
	VXORPD       Y15, Y15, Y15
	TESTQ        CX, CX
	JZ           e_done

e_loop:
	VMOVUPS      (SI), Y0
	VSUBPS       Y13, Y0, Y0
	VMULPS       Y12, Y0, Y0
	// Lanes below the smallest normal result become 0.
	VCMPPS       $0x1D, Y8, Y0, Y5
	VMAXPS       Y8, Y0, Y0
	VMINPS       Y7, Y0, Y0
	VMULPS       Y11, Y0, Y1
	VROUNDPS     $0, Y1, Y1
	VFNMADD231PS Y10, Y1, Y0
	VFNMADD231PS Y9, Y1, Y0
	VMULPS       Y0, Y0, Y3
	VBROADCASTSS 20(R8), Y2
	VBROADCASTSS 24(R8), Y4
	VFMADD213PS  Y4, Y0, Y2
	VBROADCASTSS 28(R8), Y4
	VFMADD213PS  Y4, Y0, Y2
	VBROADCASTSS 32(R8), Y4
	VFMADD213PS  Y4, Y0, Y2
	VBROADCASTSS 36(R8), Y4
	VFMADD213PS  Y4, Y0, Y2
	VBROADCASTSS 40(R8), Y4
	VFMADD213PS  Y4, Y0, Y2
	VFMADD213PS  Y0, Y3, Y2
	VADDPS       Y6, Y2, Y2
	VCVTPS2DQ    Y1, Y1
	VPSLLD       $23, Y1, Y1
	VPADDD       Y1, Y2, Y2
	VANDPS       Y5, Y2, Y2
	VMOVUPS      Y2, (DI)
	VCVTPS2PD    X2, Y0
	VADDPD       Y0, Y14, Y14
	VEXTRACTF128 $1, Y2, X2
	VCVTPS2PD    X2, Y0
	VADDPD       Y0, Y15, Y15
	ADDQ         $32, SI
	ADDQ         $32, DI
	SUBQ         $8, CX
	JNZ          e_loop

e_done:
	VADDPD       Y15, Y14, Y14
	VEXTRACTF128 $1, Y14, X0
	VADDPD       X0, X14, X0
	VHADDPD      X0, X0, X0
	MOVSD        X0, ret+40(FP)
	VZEROUPPER
	RET
''')

w('''// func maxAVX2(x *float32, n int) float32
//
// The largest of n floats, n a positive multiple of 32, in four 8-lane
// accumulators.
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ    x+0(FP), SI
	MOVQ    n+8(FP), CX
	VMOVUPS (SI), Y0
	VMOVUPS Y0, Y1
	VMOVUPS Y0, Y2
	VMOVUPS Y0, Y3

m_loop:
	VMAXPS  (SI), Y0, Y0
	VMAXPS  32(SI), Y1, Y1
	VMAXPS  64(SI), Y2, Y2
	VMAXPS  96(SI), Y3, Y3
	ADDQ    $128, SI
	SUBQ    $32, CX
	JNZ     m_loop

	VMAXPS       Y1, Y0, Y0
	VMAXPS       Y3, Y2, Y2
	VMAXPS       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0x4E, X0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0xB1, X0, X1
	VMAXPS       X1, X0, X0
	MOVSS        X0, ret+16(FP)
	VZEROUPPER
	RET

// func scaleAVX2(alpha float32, x *float32, n int)
//
// x[i] *= alpha for n floats, n a multiple of 8.
TEXT ·scaleAVX2(SB), NOSPLIT, $0-24
	VBROADCASTSS alpha+0(FP), Y0
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	TESTQ        CX, CX
	JZ           s_done

s_loop:
	VMULPS  (SI), Y0, Y1
	VMOVUPS Y1, (SI)
	ADDQ    $32, SI
	SUBQ    $8, CX
	JNZ     s_loop

s_done:
	VZEROUPPER
	RET

// func cpuid(eax, ecx uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eax+0(FP), AX
	MOVL ecx+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func xgetbv() (eax, edx uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET''')
print("\n".join(out))
