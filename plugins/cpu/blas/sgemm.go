// Package blas is the matrix multiply under the CPU backend: a row-major
// single-precision GEMM, cache-blocked with packed panels in the manner of
// GotoBLAS/BLIS and parallel over goroutines.
//
// The inner kernel is AVX2+FMA assembly on amd64 processors that have it
// and a register-blocked pure-Go loop everywhere else (or with the purego
// build tag). Built with the openblas tag (and cgo), multi-threaded calls go
// to OpenBLAS's cblas_sgemm instead.
//
// Work is split only along the rows and columns of C, never along k, so every
// element of C is reduced in the same order whatever the thread count: results
// are bitwise reproducible on a given machine and kernel.
package blas

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/whittle-ml/whittle/plugins/cpu/internal/parallel"
)

var defaultThreads atomic.Int32

// SetThreads sets the number of goroutines Sgemm uses; n <= 0 restores the
// default, GOMAXPROCS.
func SetThreads(n int) {
	if n < 0 {
		n = 0
	}
	defaultThreads.Store(int32(n))
}

// Threads is the number of goroutines Sgemm uses.
func Threads() int {
	if n := int(defaultThreads.Load()); n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// Kernel names the inner kernel in use ("avx2-fma 6x16", "go 4x4", ...),
// for benchmark reports.
func Kernel() string {
	k := activeKernel()
	return fmt.Sprintf("%s %dx%d%s", k.name, k.mr, k.nr, backendSuffix())
}

// Sgemm computes C = alpha·op(A)·op(B) + beta·C with Threads() goroutines,
// where op(X) is X or its transpose, op(A) is m×k, op(B) is k×n and C is
// m×n, all row-major with leading dimensions lda, ldb, ldc. As in BLAS, C is
// not read when beta is zero. Inconsistent sizes are programming errors and
// panic with the offending argument named.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	SgemmThreads(Threads(), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// SgemmThreads is Sgemm with an explicit goroutine count; 1 runs on the
// calling goroutine, which is what callers that already parallelize over
// independent products (attention heads) want.
func SgemmThreads(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if beta == 0 {
		beta = 0 // a negative zero would make the kernels read C
	}
	if alpha == 0 || k == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if threads < 1 {
		threads = 1
	}
	if threads > 1 && backendSgemm(threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	gemm(activeKernel(), threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func checkArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("blas: negative size m=%d n=%d k=%d", m, n, k))
	}
	check := func(name string, trans bool, rows, cols int, x []float32, ld int) {
		if trans {
			rows, cols = cols, rows
		}
		if ld < max(cols, 1) {
			panic(fmt.Sprintf("blas: ld%s=%d is less than the %d columns of %s", name, ld, cols, name))
		}
		if rows > 0 && cols > 0 && len(x) < (rows-1)*ld+cols {
			panic(fmt.Sprintf("blas: %s holds %d elements, a %dx%d matrix with leading dimension %d needs %d",
				name, len(x), rows, cols, ld, (rows-1)*ld+cols))
		}
	}
	check("a", transA, m, k, a, lda)
	check("b", transB, k, n, b, ldb)
	check("c", false, m, n, c, ldc)
}

func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		if beta != 1 {
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// kernel is a micro-kernel: it multiplies an mr×k panel of A (k steps of
// mr floats, astep apart: mr when packed, lda for a transposed A read in
// place) by a k×nr packed panel of B and writes alpha·AB + beta·C into a
// full mr×nr tile of C (C not read when beta is 0).
type kernel struct {
	name   string
	mr, nr int
	fn     func(k int, a []float32, astep int, b, c []float32, ldc int, alpha, beta float32)
	// direct, when not nil, is fn reading mr rows of a row-major A in
	// place (lda apart) instead of a packed panel.
	direct func(k int, a []float32, lda int, b, c []float32, ldc int, alpha, beta float32)
}

// Blocking: a kc×nc block of B is packed once and shared by all goroutines,
// which take mc×kc blocks of A (read in place or packed). A kc×nr B
// micro-panel (at most 20 KiB) stays in L1 and the A block in L2. k is cut
// into equal blocks of at most blockK.
const (
	blockK = 320
	blockM = 96
	blockN = 2048
)

// maxInPlaceLD bounds the leading dimension of a transposed A that the
// kernel reads in place: each k step is a new row, and rows far apart cost
// a TLB miss each, so wide ones are packed instead.
var maxInPlaceLD = 1024

var packPool sync.Pool

func getBuf(n int) *[]float32 {
	if p, ok := packPool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n)
	return &s
}

func putBuf(p *[]float32) { packPool.Put(p) }

func gemm(kn kernel, threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	mr, nr := kn.mr, kn.nr
	// Equal k blocks: a short last block would pay the tile stores for
	// little work. The split depends on k alone, which keeps the reduction
	// order independent of the thread count.
	kc0 := ceilDiv(k, ceilDiv(k, blockK))
	nc0 := min(roundUp(n, nr), blockN)
	// Row blocks shrink so that every goroutine gets one when m is small.
	mc0 := min(roundUp(m, mr), blockM/mr*mr)
	if threads > 1 {
		mc0 = min(mc0, max(mr, roundUp(ceilDiv(m, threads), mr)))
	}
	bpBuf := getBuf(kc0 * nc0)
	defer putBuf(bpBuf)
	bp := *bpBuf

	for jc := 0; jc < n; jc += nc0 {
		nc := min(nc0, n-jc)
		panelsN := ceilDiv(nc, nr)
		for pc := 0; pc < k; pc += kc0 {
			kc := min(kc0, k-pc)
			bt := beta
			if pc > 0 {
				bt = 1
			}
			// Pack B, split by micro-panels.
			parallel.For(threads, panelsN, func(lo, hi int) {
				for p := lo; p < hi; p++ {
					j0 := p * nr
					packB(bp[p*kc*nr:(p+1)*kc*nr], transB, b, ldb, pc, kc, jc+j0, min(nr, nc-j0), nr)
				}
			})
			rowBlocks := ceilDiv(m, mc0)
			// Too few row blocks to balance the goroutines (aim for four
			// tasks each): also split the columns of this block into
			// groups of at least four micro-panels.
			colGroups := 1
			if threads > 1 && rowBlocks < 4*threads {
				colGroups = max(1, min(panelsN/4, ceilDiv(4*threads, rowBlocks)))
			}
			tasks := rowBlocks * colGroups
			var next atomic.Int64
			worker := func() {
				// One pooled buffer: the packed A block, then an edge tile.
				apBuf := getBuf(mc0*kc + mr*nr)
				defer putBuf(apBuf)
				ap := (*apBuf)[:mc0*kc]
				tile := (*apBuf)[mc0*kc:]
				for {
					t := int(next.Add(1) - 1)
					if t >= tasks {
						return
					}
					rb, cg := t/colGroups, t%colGroups
					ic := rb * mc0
					mc := min(mc0, m-ic)
					p0, p1 := cg*panelsN/colGroups, (cg+1)*panelsN/colGroups
					// A is read in place, by the strided kernel when
					// transposed and by a direct kernel when row-major; only a
					// last partial panel is packed (padded with zeros).
					inPlace := (transA && lda <= maxInPlaceLD) || (!transA && kn.direct != nil)
					fullRows := mc
					if inPlace {
						fullRows = mc / mr * mr
						if fullRows < mc {
							packA(ap[fullRows*kc:], transA, a, lda, ic+fullRows, mc-fullRows, pc, kc, mr)
						}
					} else {
						packA(ap, transA, a, lda, ic, mc, pc, kc, mr)
					}
					for p := p0; p < p1; p++ {
						j0 := p * nr
						nrr := min(nr, nc-j0)
						bpp := bp[p*kc*nr : (p+1)*kc*nr]
						for ir := 0; ir < mc; ir += mr {
							mrr := min(mr, mc-ir)
							app := ap[ir*kc : ir*kc+mr*kc]
							ci := (ic+ir)*ldc + jc + j0
							dst, ldd, al, be := c[ci:], ldc, alpha, bt
							if nrr < nr || mrr < mr {
								// Edge tile: compute in full, then merge.
								dst, ldd, al, be = tile, nr, 1, 0
							}
							switch {
							case !inPlace || ir >= fullRows:
								kn.fn(kc, app, mr, bpp, dst, ldd, al, be)
							case transA:
								kn.fn(kc, a[pc*lda+ic+ir:], lda, bpp, dst, ldd, al, be)
							default:
								kn.direct(kc, a[(ic+ir)*lda+pc:], lda, bpp, dst, ldd, al, be)
							}
							if nrr == nr && mrr == mr {
								continue
							}
							for i := 0; i < mrr; i++ {
								row := c[ci+i*ldc : ci+i*ldc+nrr]
								tr := tile[i*nr : i*nr+nrr]
								if bt == 0 {
									for j, v := range tr {
										row[j] = alpha * v
									}
								} else {
									for j, v := range tr {
										row[j] = alpha*v + bt*row[j]
									}
								}
							}
						}
					}
				}
			}
			if threads == 1 || tasks == 1 {
				worker()
				continue
			}
			var wg sync.WaitGroup
			for w := 0; w < min(threads, tasks); w++ {
				wg.Go(worker)
			}
			wg.Wait()
		}
	}
}

// packA copies rows [i0, i0+mc) and columns [p0, p0+kc) of op(A) into
// panels of mr rows, each stored column by column (mr values per k step),
// zero-padding the last panel.
func packA(dst []float32, trans bool, a []float32, lda, i0, mc, p0, kc, mr int) {
	for ir := 0; ir < mc; ir += mr {
		mrr := min(mr, mc-ir)
		panel := dst[ir*kc : ir*kc+mr*kc]
		if trans {
			// op(A)(i, p) = a[p*lda+i]: each k step is a contiguous run,
			// too short for copy's call to pay off at the kernel's width.
			if mr == 6 && mrr == 6 {
				for p := 0; p < kc; p++ {
					off := (p0+p)*lda + i0 + ir
					*(*[6]float32)(panel[p*6:]) = [6]float32(a[off : off+6])
				}
				continue
			}
			for p := 0; p < kc; p++ {
				src := a[(p0+p)*lda+i0+ir : (p0+p)*lda+i0+ir+mrr]
				d := panel[p*mr : p*mr+mr]
				copy(d, src)
				clear(d[mrr:])
			}
			continue
		}
		for i := 0; i < mrr; i++ {
			src := a[(i0+ir+i)*lda+p0 : (i0+ir+i)*lda+p0+kc]
			for p, v := range src {
				panel[p*mr+i] = v
			}
		}
		for i := mrr; i < mr; i++ {
			for p := 0; p < kc; p++ {
				panel[p*mr+i] = 0
			}
		}
	}
}

// packB copies rows [p0, p0+kc) and columns [j0, j0+nrr) of op(B) into one
// micro-panel stored row by row (nr values per k step), zero-padded to nr.
func packB(dst []float32, trans bool, b []float32, ldb, p0, kc, j0, nrr, nr int) {
	if trans {
		// op(B)(p, j) = b[j*ldb+p]: read each source row once.
		for j := 0; j < nrr; j++ {
			src := b[(j0+j)*ldb+p0 : (j0+j)*ldb+p0+kc]
			for p, v := range src {
				dst[p*nr+j] = v
			}
		}
		for j := nrr; j < nr; j++ {
			for p := 0; p < kc; p++ {
				dst[p*nr+j] = 0
			}
		}
		return
	}
	if nr == 16 && nrr == 16 {
		for p := 0; p < kc; p++ {
			off := (p0+p)*ldb + j0
			*(*[16]float32)(dst[p*16:]) = [16]float32(b[off : off+16])
		}
		return
	}
	for p := 0; p < kc; p++ {
		d := dst[p*nr : p*nr+nr]
		copy(d, b[(p0+p)*ldb+j0:(p0+p)*ldb+j0+nrr])
		clear(d[nrr:])
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, b int) int { return ceilDiv(a, b) * b }
