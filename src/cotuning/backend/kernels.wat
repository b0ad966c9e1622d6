;; Hand-written WASM SIMD kernels for gradients that XNNPACK has no fast form for.
;; They run in the TF.js WASM backend's own memory (imported), on tensors in place:
;; every pointer is a byte offset of a float32 NHWC buffer in that memory.
(module
  (import "tfjs" "memory" (memory 1))

  ;; Depthwise convolution filter gradient, depth multiplier 1:
  ;;   out[ky, kx, c] = sum over b, oy, ox of x[b, iy, ix, c] * dy[b, oy, ox, c]
  ;;   with iy = oy*sh + ky*dh - pt, ix = ox*sw + kx*dw - pl (taps outside x are zero padding).
  ;; One pass over dy, row by row. For 3x3 filters and channels in fours, the pixels of a row
  ;; whose taps are all inside x go through $depthwiseRow3x3 (9 accumulators in registers);
  ;; every other pixel through $depthwisePixel.
  (func (export "depthwiseFilterGrad")
    (param $x i32) (param $dy i32) (param $out i32)
    (param $n i32) (param $h i32) (param $w i32) (param $c i32)
    (param $ho i32) (param $wo i32) (param $kh i32) (param $kw i32)
    (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $pt i32) (param $pl i32)
    (local $fast i32) (local $oxLo i32) (local $oxHi i32) (local $iy i32)
    (local $b i32) (local $oy i32) (local $ox i32)
    (memory.fill (local.get $out) (i32.const 0)
      (i32.mul (i32.mul (local.get $kh) (local.get $kw)) (i32.shl (local.get $c) (i32.const 2))))
    (local.set $fast (i32.and
      (i32.and (i32.eq (local.get $kh) (i32.const 3)) (i32.eq (local.get $kw) (i32.const 3)))
      (i32.eqz (i32.and (local.get $c) (i32.const 3)))))
    ;; Columns whose three taps are all inside x: ox*sw >= pl and ox*sw + 2*dw - pl <= w - 1.
    (local.set $oxLo (i32.div_u (i32.add (local.get $pl) (i32.sub (local.get $sw) (i32.const 1))) (local.get $sw)))
    (local.set $oxHi (i32.add (i32.div_s
      (i32.add (i32.sub (i32.sub (local.get $w) (i32.const 1)) (i32.mul (local.get $dw) (i32.const 2))) (local.get $pl))
      (local.get $sw)) (i32.const 1)))
    (if (i32.lt_s (i32.add (i32.sub (i32.sub (local.get $w) (i32.const 1)) (i32.mul (local.get $dw) (i32.const 2))) (local.get $pl)) (i32.const 0))
      (then (local.set $oxHi (i32.const 0))))
    (if (i32.gt_s (local.get $oxHi) (local.get $wo)) (then (local.set $oxHi (local.get $wo))))
    (if (i32.lt_s (local.get $oxHi) (local.get $oxLo)) (then (local.set $oxHi (local.get $oxLo))))
    (if (i32.gt_s (local.get $oxLo) (local.get $wo)) (then (local.set $oxLo (local.get $wo)) (local.set $oxHi (local.get $wo))))
    (local.set $b (i32.const 0))
    (block $bDone (loop $bLoop
      (br_if $bDone (i32.ge_u (local.get $b) (local.get $n)))
      (local.set $oy (i32.const 0))
      (block $oyDone (loop $oyLoop
        (br_if $oyDone (i32.ge_u (local.get $oy) (local.get $ho)))
        (local.set $iy (i32.sub (i32.mul (local.get $oy) (local.get $sh)) (local.get $pt)))
        (if (i32.and (local.get $fast)
              (i32.and (i32.ge_s (local.get $iy) (i32.const 0))
                       (i32.lt_s (i32.add (local.get $iy) (i32.mul (local.get $dh) (i32.const 2))) (local.get $h))))
          (then
            (local.set $ox (i32.const 0))
            (block $loDone (loop $loLoop
              (br_if $loDone (i32.ge_u (local.get $ox) (local.get $oxLo)))
              (call $depthwisePixel (local.get $x) (local.get $dy) (local.get $out)
                (local.get $h) (local.get $w) (local.get $c) (local.get $ho) (local.get $wo)
                (local.get $kh) (local.get $kw) (local.get $sh) (local.get $sw) (local.get $dh) (local.get $dw)
                (local.get $pt) (local.get $pl) (local.get $b) (local.get $oy) (local.get $ox))
              (local.set $ox (i32.add (local.get $ox) (i32.const 1)))
              (br $loLoop)))
            (call $depthwiseRow3x3 (local.get $x) (local.get $dy) (local.get $out)
              (local.get $h) (local.get $w) (local.get $c) (local.get $ho) (local.get $wo)
              (local.get $sw) (local.get $dh) (local.get $dw) (local.get $pl)
              (local.get $b) (local.get $oy) (local.get $iy) (local.get $oxLo) (local.get $oxHi))
            (local.set $ox (local.get $oxHi)))
          (else (local.set $ox (i32.const 0))))
        (block $restDone (loop $restLoop
          (br_if $restDone (i32.ge_u (local.get $ox) (local.get $wo)))
          (call $depthwisePixel (local.get $x) (local.get $dy) (local.get $out)
            (local.get $h) (local.get $w) (local.get $c) (local.get $ho) (local.get $wo)
            (local.get $kh) (local.get $kw) (local.get $sh) (local.get $sw) (local.get $dh) (local.get $dw)
            (local.get $pt) (local.get $pl) (local.get $b) (local.get $oy) (local.get $ox))
          (local.set $ox (i32.add (local.get $ox) (i32.const 1)))
          (br $restLoop)))
        (local.set $oy (i32.add (local.get $oy) (i32.const 1)))
        (br $oyLoop)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bLoop))))

  ;; Output pixels oxLo..oxHi-1 of row (b, oy) of a 3x3 depthwise filter gradient whose taps are
  ;; all inside x (iy = oy*sh - pt is the top tap row). Per 4 channels, the 9 tap sums stay in
  ;; registers for the whole row and join out once.
  (func $depthwiseRow3x3
    (param $x i32) (param $dy i32) (param $out i32)
    (param $h i32) (param $w i32) (param $c i32) (param $ho i32) (param $wo i32)
    (param $sw i32) (param $dh i32) (param $dw i32) (param $pl i32)
    (param $b i32) (param $oy i32) (param $iy i32) (param $oxLo i32) (param $oxHi i32)
    (local $cBytes i32) (local $rowBytes i32) (local $step i32) (local $t1 i32) (local $t2 i32)
    (local $g i32) (local $p0 i32) (local $p1 i32) (local $p2 i32) (local $dp i32) (local $dEnd i32)
    (local $d v128) (local $op i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $a4 v128)
    (local $a5 v128) (local $a6 v128) (local $a7 v128) (local $a8 v128)
    (if (i32.ge_u (local.get $oxLo) (local.get $oxHi)) (then (return)))
    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $rowBytes (i32.mul (i32.mul (local.get $w) (local.get $cBytes)) (local.get $dh)))
    (local.set $step (i32.mul (local.get $sw) (local.get $cBytes)))
    (local.set $t1 (i32.mul (local.get $dw) (local.get $cBytes)))
    (local.set $t2 (i32.shl (local.get $t1) (i32.const 1)))
    (local.set $g (i32.const 0))
    (block $gDone (loop $gLoop
      (br_if $gDone (i32.ge_u (local.get $g) (local.get $cBytes)))
      (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
      (local.set $a2 (v128.const i32x4 0 0 0 0)) (local.set $a3 (v128.const i32x4 0 0 0 0))
      (local.set $a4 (v128.const i32x4 0 0 0 0)) (local.set $a5 (v128.const i32x4 0 0 0 0))
      (local.set $a6 (v128.const i32x4 0 0 0 0)) (local.set $a7 (v128.const i32x4 0 0 0 0))
      (local.set $a8 (v128.const i32x4 0 0 0 0))
      ;; Left tap of the first pixel in each of the three tap rows.
      (local.set $p0 (i32.add (i32.add (local.get $x)
        (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h)) (local.get $iy)) (local.get $w))
                          (i32.sub (i32.mul (local.get $oxLo) (local.get $sw)) (local.get $pl)))
                 (local.get $cBytes)))
        (local.get $g)))
      (local.set $p1 (i32.add (local.get $p0) (local.get $rowBytes)))
      (local.set $p2 (i32.add (local.get $p1) (local.get $rowBytes)))
      (local.set $dp (i32.add (i32.add (local.get $dy)
        (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $ho)) (local.get $oy)) (local.get $wo)) (local.get $oxLo))
                 (local.get $cBytes)))
        (local.get $g)))
      (local.set $dEnd (i32.add (local.get $dp) (i32.mul (i32.sub (local.get $oxHi) (local.get $oxLo)) (local.get $cBytes))))
      (loop $pix
        (local.set $d (v128.load (local.get $dp)))
        (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $p0)) (local.get $d))))
        (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load (i32.add (local.get $p0) (local.get $t1))) (local.get $d))))
        (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (v128.load (i32.add (local.get $p0) (local.get $t2))) (local.get $d))))
        (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (v128.load (local.get $p1)) (local.get $d))))
        (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (v128.load (i32.add (local.get $p1) (local.get $t1))) (local.get $d))))
        (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (v128.load (i32.add (local.get $p1) (local.get $t2))) (local.get $d))))
        (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (v128.load (local.get $p2)) (local.get $d))))
        (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (v128.load (i32.add (local.get $p2) (local.get $t1))) (local.get $d))))
        (local.set $a8 (f32x4.add (local.get $a8) (f32x4.mul (v128.load (i32.add (local.get $p2) (local.get $t2))) (local.get $d))))
        (local.set $p0 (i32.add (local.get $p0) (local.get $step)))
        (local.set $p1 (i32.add (local.get $p1) (local.get $step)))
        (local.set $p2 (i32.add (local.get $p2) (local.get $step)))
        (local.set $dp (i32.add (local.get $dp) (local.get $cBytes)))
        (br_if $pix (i32.lt_u (local.get $dp) (local.get $dEnd))))
      ;; out[tap, g..g+3] += the tap sums; taps are cBytes apart.
      (local.set $op (i32.add (local.get $out) (local.get $g)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a0)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a1)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a2)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a3)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a4)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a5)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a6)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a7)))
      (local.set $op (i32.add (local.get $op) (local.get $cBytes)))
      (v128.store (local.get $op) (f32x4.add (v128.load (local.get $op)) (local.get $a8)))
      (local.set $g (i32.add (local.get $g) (i32.const 16)))
      (br $gLoop))))

  ;; Adds dy pixel (b, oy, ox) times its kh*kw input taps to out, skipping taps in the padding;
  ;; channels 4 at a time, the remainder (c mod 4) one at a time.
  (func $depthwisePixel
    (param $x i32) (param $dy i32) (param $out i32)
    (param $h i32) (param $w i32) (param $c i32) (param $ho i32) (param $wo i32)
    (param $kh i32) (param $kw i32) (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $pt i32) (param $pl i32) (param $b i32) (param $oy i32) (param $ox i32)
    (local $cBytes i32) (local $vecBytes i32) (local $ky i32) (local $kx i32)
    (local $iy i32) (local $ix i32)
    (local $dyPix i32) (local $xRow i32) (local $xPix i32) (local $oTap i32) (local $i i32)
    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $vecBytes (i32.and (local.get $cBytes) (i32.const -16)))
    (local.set $dyPix (i32.add (local.get $dy)
      (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $ho)) (local.get $oy)) (local.get $wo)) (local.get $ox))
               (local.get $cBytes))))
    (local.set $ky (i32.const 0))
    (block $kyDone (loop $kyLoop
      (br_if $kyDone (i32.ge_u (local.get $ky) (local.get $kh)))
      (local.set $iy (i32.sub
        (i32.add (i32.mul (local.get $oy) (local.get $sh)) (i32.mul (local.get $ky) (local.get $dh)))
        (local.get $pt)))
      ;; Unsigned compare also rejects negative rows (top padding).
      (if (i32.lt_u (local.get $iy) (local.get $h)) (then
        (local.set $xRow (i32.add (local.get $x)
          (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h)) (local.get $iy))
                   (i32.mul (local.get $w) (local.get $cBytes)))))
        (local.set $kx (i32.const 0))
        (block $kxDone (loop $kxLoop
          (br_if $kxDone (i32.ge_u (local.get $kx) (local.get $kw)))
          (local.set $ix (i32.sub
            (i32.add (i32.mul (local.get $ox) (local.get $sw)) (i32.mul (local.get $kx) (local.get $dw)))
            (local.get $pl)))
          (if (i32.lt_u (local.get $ix) (local.get $w)) (then
            (local.set $xPix (i32.add (local.get $xRow) (i32.mul (local.get $ix) (local.get $cBytes))))
            (local.set $oTap (i32.add (local.get $out)
              (i32.mul (i32.add (i32.mul (local.get $ky) (local.get $kw)) (local.get $kx)) (local.get $cBytes))))
            (local.set $i (i32.const 0))
            (block $vDone (loop $vLoop
              (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecBytes)))
              (v128.store (i32.add (local.get $oTap) (local.get $i))
                (f32x4.add
                  (v128.load (i32.add (local.get $oTap) (local.get $i)))
                  (f32x4.mul
                    (v128.load (i32.add (local.get $xPix) (local.get $i)))
                    (v128.load (i32.add (local.get $dyPix) (local.get $i))))))
              (local.set $i (i32.add (local.get $i) (i32.const 16)))
              (br $vLoop)))
            (block $sDone (loop $sLoop
              (br_if $sDone (i32.ge_u (local.get $i) (local.get $cBytes)))
              (f32.store (i32.add (local.get $oTap) (local.get $i))
                (f32.add
                  (f32.load (i32.add (local.get $oTap) (local.get $i)))
                  (f32.mul
                    (f32.load (i32.add (local.get $xPix) (local.get $i)))
                    (f32.load (i32.add (local.get $dyPix) (local.get $i))))))
              (local.set $i (i32.add (local.get $i) (i32.const 4)))
              (br $sLoop)))))
          (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
          (br $kxLoop)))))
      (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
      (br $kyLoop))))

  ;; Depthwise convolution input gradient, depth multiplier 1, by scattering each dy pixel
  ;; into the dx pixels of its kh*kw taps:
  ;;   dx[b, iy, ix, c] += dy[b, oy, ox, c] * w[ky, kx, c]
  ;;   with iy = oy*sh + ky*dh - pt, ix = ox*sw + kx*dw - pl (taps in the padding are skipped).
  ;; For strides > 1 this replaces a depthwise conv over dy with zeros inserted (sh*sw times
  ;; the pixels, most of them zero).
  (func (export "depthwiseInputGrad")
    (param $dy i32) (param $wt i32) (param $dx i32)
    (param $n i32) (param $h i32) (param $w i32) (param $c i32)
    (param $ho i32) (param $wo i32) (param $kh i32) (param $kw i32)
    (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $pt i32) (param $pl i32)
    (local $cBytes i32) (local $vecBytes i32)
    (local $b i32) (local $oy i32) (local $ox i32) (local $ky i32) (local $kx i32)
    (local $iy i32) (local $ix i32)
    (local $dyPix i32) (local $dxRow i32) (local $dxPix i32) (local $wTap i32) (local $i i32)
    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $vecBytes (i32.and (local.get $cBytes) (i32.const -16)))
    (memory.fill (local.get $dx) (i32.const 0)
      (i32.mul (i32.mul (i32.mul (local.get $n) (local.get $h)) (local.get $w)) (local.get $cBytes)))
    (local.set $dyPix (local.get $dy))
    (local.set $b (i32.const 0))
    (block $bDone (loop $bLoop
      (br_if $bDone (i32.ge_u (local.get $b) (local.get $n)))
      (local.set $oy (i32.const 0))
      (block $oyDone (loop $oyLoop
        (br_if $oyDone (i32.ge_u (local.get $oy) (local.get $ho)))
        (local.set $ox (i32.const 0))
        (block $oxDone (loop $oxLoop
          (br_if $oxDone (i32.ge_u (local.get $ox) (local.get $wo)))
          (local.set $ky (i32.const 0))
          (block $kyDone (loop $kyLoop
            (br_if $kyDone (i32.ge_u (local.get $ky) (local.get $kh)))
            (local.set $iy (i32.sub
              (i32.add (i32.mul (local.get $oy) (local.get $sh)) (i32.mul (local.get $ky) (local.get $dh)))
              (local.get $pt)))
            ;; Unsigned compare also rejects negative rows (top padding).
            (if (i32.lt_u (local.get $iy) (local.get $h)) (then
              (local.set $dxRow (i32.add (local.get $dx)
                (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h)) (local.get $iy))
                         (i32.mul (local.get $w) (local.get $cBytes)))))
              (local.set $kx (i32.const 0))
              (block $kxDone (loop $kxLoop
                (br_if $kxDone (i32.ge_u (local.get $kx) (local.get $kw)))
                (local.set $ix (i32.sub
                  (i32.add (i32.mul (local.get $ox) (local.get $sw)) (i32.mul (local.get $kx) (local.get $dw)))
                  (local.get $pl)))
                (if (i32.lt_u (local.get $ix) (local.get $w)) (then
                  (local.set $dxPix (i32.add (local.get $dxRow) (i32.mul (local.get $ix) (local.get $cBytes))))
                  (local.set $wTap (i32.add (local.get $wt)
                    (i32.mul (i32.add (i32.mul (local.get $ky) (local.get $kw)) (local.get $kx)) (local.get $cBytes))))
                  (local.set $i (i32.const 0))
                  (block $vDone (loop $vLoop
                    (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecBytes)))
                    (v128.store (i32.add (local.get $dxPix) (local.get $i))
                      (f32x4.add
                        (v128.load (i32.add (local.get $dxPix) (local.get $i)))
                        (f32x4.mul
                          (v128.load (i32.add (local.get $wTap) (local.get $i)))
                          (v128.load (i32.add (local.get $dyPix) (local.get $i))))))
                    (local.set $i (i32.add (local.get $i) (i32.const 16)))
                    (br $vLoop)))
                  (block $sDone (loop $sLoop
                    (br_if $sDone (i32.ge_u (local.get $i) (local.get $cBytes)))
                    (f32.store (i32.add (local.get $dxPix) (local.get $i))
                      (f32.add
                        (f32.load (i32.add (local.get $dxPix) (local.get $i)))
                        (f32.mul
                          (f32.load (i32.add (local.get $wTap) (local.get $i)))
                          (f32.load (i32.add (local.get $dyPix) (local.get $i))))))
                    (local.set $i (i32.add (local.get $i) (i32.const 4)))
                    (br $sLoop)))))
                (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                (br $kxLoop)))))
            (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
            (br $kyLoop)))
          (local.set $dyPix (i32.add (local.get $dyPix) (local.get $cBytes)))
          (local.set $ox (i32.add (local.get $ox) (i32.const 1)))
          (br $oxLoop)))
        (local.set $oy (i32.add (local.get $oy) (i32.const 1)))
        (br $oyLoop)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bLoop))))

  ;; out = xᵀ·dy: out[i, j] = sum over rows r of x[r, i] * dy[r, j] for x [m, ci] and dy [m, co],
  ;; with ci a multiple of 4 and co a multiple of 8. The pointwise (1x1) convolution filter
  ;; gradient, and a·b of a few rows of a (with x = aᵀ). XNNPACK would need a transposed copy of
  ;; one operand and repack the other as weights on every call. Rows go in blocks of $rows so
  ;; both operands stay in L1. x rows are $xRow floats apart (≥ ci), so that a call can take a
  ;; slice of x's channels and write the matching rows of out.
  (func (export "matMulTransposedA")
    (param $x i32) (param $dy i32) (param $out i32) (param $m i32) (param $ci i32) (param $co i32) (param $rows i32) (param $xRow i32)
    (local $ciBytes i32) (local $coBytes i32) (local $xRowBytes i32) (local $r0 i32) (local $count i32)
    (local.set $ciBytes (i32.shl (local.get $ci) (i32.const 2)))
    (local.set $coBytes (i32.shl (local.get $co) (i32.const 2)))
    (local.set $xRowBytes (i32.shl (local.get $xRow) (i32.const 2)))
    ;; No rows: xᵀ·dy is zero. Otherwise the first block of rows writes out, and the rest add to it.
    (if (i32.eqz (local.get $m)) (then (memory.fill (local.get $out) (i32.const 0) (i32.mul (local.get $ci) (local.get $coBytes)))))
    (block $blocksDone (loop $blocks
      (br_if $blocksDone (i32.ge_u (local.get $r0) (local.get $m)))
      (local.set $count (select (i32.sub (local.get $m) (local.get $r0)) (local.get $rows)
        (i32.gt_u (i32.add (local.get $r0) (local.get $rows)) (local.get $m))))
      (call $accumulateOuterProducts
        (i32.add (local.get $x) (i32.mul (local.get $r0) (local.get $xRowBytes)))
        (i32.add (local.get $dy) (i32.mul (local.get $r0) (local.get $coBytes)))
        (local.get $out) (local.get $count) (local.get $ciBytes) (local.get $xRowBytes) (local.get $coBytes) (i32.eqz (local.get $r0)))
      (local.set $r0 (i32.add (local.get $r0) (local.get $count)))
      (br $blocks))))

  ;; out = a·bᵀ: out[i, j] = sum over t of a[i, t] * b[j, t] for a [m, k] and b [n, k], with m a
  ;; multiple of 4, n of 2 and k of 4; out rows are $outRow floats apart (≥ n), so that a call can
  ;; take a slice of b's rows and write the matching columns of out. Both operands are read along
  ;; their rows, so neither needs a transposed copy (a head's input gradient dz·Wᵀ: W is the big
  ;; one). 4 rows of a by 2 rows of b: 8 accumulators of 4 lanes, summed across lanes at the end.
  ;; Pairs of b's rows are the outer loop, so b is read from memory once (a 1 MB head does not
  ;; stay in L2 through a training step) while a, the few rows of dz, stays in cache.
  (func (export "matMulTransposedB")
    (param $a i32) (param $b i32) (param $out i32) (param $m i32) (param $n i32) (param $k i32) (param $outRow i32)
    (local $kBytes i32) (local $i i32) (local $j i32) (local $t i32) (local $ap i32) (local $bp i32) (local $op i32)
    (local $b0 v128) (local $b1 v128) (local $av v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $kBytes (i32.shl (local.get $k) (i32.const 2)))
    (block $jDone (loop $jLoop
      (br_if $jDone (i32.ge_u (local.get $j) (local.get $n)))
      (local.set $i (i32.const 0))
      (block $iDone (loop $iLoop
        (br_if $iDone (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $c20 (v128.const i32x4 0 0 0 0)) (local.set $c21 (v128.const i32x4 0 0 0 0))
        (local.set $c30 (v128.const i32x4 0 0 0 0)) (local.set $c31 (v128.const i32x4 0 0 0 0))
        (local.set $ap (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $kBytes))))
        (local.set $bp (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $kBytes))))
        (local.set $t (i32.const 0))
        (block $tDone (loop $tLoop
          (br_if $tDone (i32.ge_u (local.get $t) (local.get $kBytes)))
          (local.set $b0 (v128.load (i32.add (local.get $bp) (local.get $t))))
          (local.set $b1 (v128.load (i32.add (i32.add (local.get $bp) (local.get $kBytes)) (local.get $t))))
          (local.set $av (v128.load (i32.add (local.get $ap) (local.get $t))))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $av) (local.get $b0))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $av) (local.get $b1))))
          (local.set $av (v128.load (i32.add (i32.add (local.get $ap) (local.get $kBytes)) (local.get $t))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $av) (local.get $b0))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $av) (local.get $b1))))
          (local.set $av (v128.load (i32.add (i32.add (local.get $ap) (i32.shl (local.get $kBytes) (i32.const 1))) (local.get $t))))
          (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $av) (local.get $b0))))
          (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $av) (local.get $b1))))
          (local.set $av (v128.load (i32.add (i32.add (local.get $ap) (i32.mul (local.get $kBytes) (i32.const 3))) (local.get $t))))
          (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $av) (local.get $b0))))
          (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $av) (local.get $b1))))
          (local.set $t (i32.add (local.get $t) (i32.const 16)))
          (br $tLoop)))
        ;; out[i + r, j + c] = the lanes of accumulator rc added up.
        (local.set $op (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $outRow)) (local.get $j)) (i32.const 2))))
        (f32.store (local.get $op) (call $laneSum (local.get $c00)))
        (f32.store offset=4 (local.get $op) (call $laneSum (local.get $c01)))
        (local.set $op (i32.add (local.get $op) (i32.shl (local.get $outRow) (i32.const 2))))
        (f32.store (local.get $op) (call $laneSum (local.get $c10)))
        (f32.store offset=4 (local.get $op) (call $laneSum (local.get $c11)))
        (local.set $op (i32.add (local.get $op) (i32.shl (local.get $outRow) (i32.const 2))))
        (f32.store (local.get $op) (call $laneSum (local.get $c20)))
        (f32.store offset=4 (local.get $op) (call $laneSum (local.get $c21)))
        (local.set $op (i32.add (local.get $op) (i32.shl (local.get $outRow) (i32.const 2))))
        (f32.store (local.get $op) (call $laneSum (local.get $c30)))
        (f32.store offset=4 (local.get $op) (call $laneSum (local.get $c31)))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $iLoop)))
      (local.set $j (i32.add (local.get $j) (i32.const 2)))
      (br $jLoop))))

  ;; out = a·b: out[i, j] = sum over t of a[i, t] * b[t, j] for a [m, k], b [k, n] and out [m, n],
  ;; with n a multiple of 8 (a pointwise convolution x·W, and its input gradient dy·Wᵀ with Wᵀ
  ;; copied). b is read as it lies: XNNPACK would repack it as weights on every call, and a
  ;; training step's weights are new tensors every step. 4 rows of a by 8 columns of b in 8
  ;; registers, a's values broadcast, b's rows loaded as they are; the 4 rows of a (k floats each)
  ;; stay in L1 while b streams from L2. Rows past the last multiple of 4 go one at a time.
  (func (export "matMul")
    (param $a i32) (param $b i32) (param $out i32) (param $m i32) (param $k i32) (param $n i32)
    (local $kBytes i32) (local $nBytes i32) (local $i i32) (local $j i32) (local $ap i32) (local $aEnd i32) (local $bp i32) (local $op i32)
    (local $b0 v128) (local $b1 v128) (local $s v128)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local.set $kBytes (i32.shl (local.get $k) (i32.const 2)))
    (local.set $nBytes (i32.shl (local.get $n) (i32.const 2)))
    (block $quadsDone (loop $quads
      (br_if $quadsDone (i32.gt_u (i32.add (local.get $i) (i32.const 4)) (local.get $m)))
      (local.set $j (i32.const 0))
      (block $jDone (loop $jLoop
        (br_if $jDone (i32.ge_u (local.get $j) (local.get $nBytes)))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $c20 (v128.const i32x4 0 0 0 0)) (local.set $c21 (v128.const i32x4 0 0 0 0))
        (local.set $c30 (v128.const i32x4 0 0 0 0)) (local.set $c31 (v128.const i32x4 0 0 0 0))
        (local.set $ap (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $kBytes))))
        (local.set $aEnd (i32.add (local.get $ap) (local.get $kBytes)))
        (local.set $bp (i32.add (local.get $b) (local.get $j)))
        (block $tDone (loop $tLoop
          (br_if $tDone (i32.ge_u (local.get $ap) (local.get $aEnd)))
          (local.set $b0 (v128.load (local.get $bp)))
          (local.set $b1 (v128.load offset=16 (local.get $bp)))
          (local.set $s (v128.load32_splat (local.get $ap)))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (local.get $b0))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (local.get $b1))))
          (local.set $s (v128.load32_splat (i32.add (local.get $ap) (local.get $kBytes))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $s) (local.get $b0))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $s) (local.get $b1))))
          (local.set $s (v128.load32_splat (i32.add (local.get $ap) (i32.shl (local.get $kBytes) (i32.const 1)))))
          (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $s) (local.get $b0))))
          (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $s) (local.get $b1))))
          (local.set $s (v128.load32_splat (i32.add (local.get $ap) (i32.mul (local.get $kBytes) (i32.const 3)))))
          (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $s) (local.get $b0))))
          (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $s) (local.get $b1))))
          (local.set $ap (i32.add (local.get $ap) (i32.const 4)))
          (local.set $bp (i32.add (local.get $bp) (local.get $nBytes)))
          (br $tLoop)))
        (local.set $op (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $nBytes))) (local.get $j)))
        (v128.store (local.get $op) (local.get $c00))
        (v128.store offset=16 (local.get $op) (local.get $c01))
        (local.set $op (i32.add (local.get $op) (local.get $nBytes)))
        (v128.store (local.get $op) (local.get $c10))
        (v128.store offset=16 (local.get $op) (local.get $c11))
        (local.set $op (i32.add (local.get $op) (local.get $nBytes)))
        (v128.store (local.get $op) (local.get $c20))
        (v128.store offset=16 (local.get $op) (local.get $c21))
        (local.set $op (i32.add (local.get $op) (local.get $nBytes)))
        (v128.store (local.get $op) (local.get $c30))
        (v128.store offset=16 (local.get $op) (local.get $c31))
        (local.set $j (i32.add (local.get $j) (i32.const 32)))
        (br $jLoop)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $quads)))
    ;; The last m % 4 rows.
    (block $rowsDone (loop $rows
      (br_if $rowsDone (i32.ge_u (local.get $i) (local.get $m)))
      (local.set $j (i32.const 0))
      (block $jDone (loop $jLoop
        (br_if $jDone (i32.ge_u (local.get $j) (local.get $nBytes)))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $ap (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $kBytes))))
        (local.set $aEnd (i32.add (local.get $ap) (local.get $kBytes)))
        (local.set $bp (i32.add (local.get $b) (local.get $j)))
        (block $tDone (loop $tLoop
          (br_if $tDone (i32.ge_u (local.get $ap) (local.get $aEnd)))
          (local.set $s (v128.load32_splat (local.get $ap)))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $s) (v128.load (local.get $bp)))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $s) (v128.load offset=16 (local.get $bp)))))
          (local.set $ap (i32.add (local.get $ap) (i32.const 4)))
          (local.set $bp (i32.add (local.get $bp) (local.get $nBytes)))
          (br $tLoop)))
        (local.set $op (i32.add (i32.add (local.get $out) (i32.mul (local.get $i) (local.get $nBytes))) (local.get $j)))
        (v128.store (local.get $op) (local.get $c00))
        (v128.store offset=16 (local.get $op) (local.get $c01))
        (local.set $j (i32.add (local.get $j) (i32.const 32)))
        (br $jLoop)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows))))

  ;; (v0 + v2) + (v1 + v3) of a vector's lanes.
  (func $laneSum (param $v v128) (result f32)
    (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 2 (local.get $v)))
      (f32.add (f32x4.extract_lane 1 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))

  ;; out [ci, co] += xᵀ·dy over $count rows of x (ci channels, rows $xRowBytes apart) and dy
  ;; [.., co] (ci % 4 = 0, co % 8 = 0); with $assign, out = xᵀ·dy (the first block of rows: no
  ;; zero-fill and no read of out, which is a pass over 1 MB for a 256x1000 head). A block of 4
  ;; x-channels times 8 dy-channels stays in 8 registers while the rows stream by.
  (func $accumulateOuterProducts
    (param $x i32) (param $dy i32) (param $out i32) (param $count i32) (param $ciBytes i32) (param $xRowBytes i32) (param $coBytes i32) (param $assign i32)
    (local $r i32) (local $i i32) (local $j i32) (local $xp i32) (local $dp i32) (local $op i32)
    (local $d0 v128) (local $d1 v128) (local $s v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local.set $i (i32.const 0))
    (block $iDone (loop $iLoop
      (br_if $iDone (i32.ge_u (local.get $i) (local.get $ciBytes)))
      (local.set $j (i32.const 0))
      (block $jDone (loop $jLoop
        (br_if $jDone (i32.ge_u (local.get $j) (local.get $coBytes)))
        (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
        (local.set $a2 (v128.const i32x4 0 0 0 0)) (local.set $a3 (v128.const i32x4 0 0 0 0))
        (local.set $a4 (v128.const i32x4 0 0 0 0)) (local.set $a5 (v128.const i32x4 0 0 0 0))
        (local.set $a6 (v128.const i32x4 0 0 0 0)) (local.set $a7 (v128.const i32x4 0 0 0 0))
        (local.set $xp (i32.add (local.get $x) (local.get $i)))
        (local.set $dp (i32.add (local.get $dy) (local.get $j)))
        (local.set $r (i32.const 0))
        (block $rDone (loop $rLoop
          (br_if $rDone (i32.ge_u (local.get $r) (local.get $count)))
          (local.set $d0 (v128.load (local.get $dp)))
          (local.set $d1 (v128.load offset=16 (local.get $dp)))
          (local.set $s (v128.load32_splat (local.get $xp)))
          (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $s) (local.get $d0))))
          (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $s) (local.get $d1))))
          (local.set $s (v128.load32_splat offset=4 (local.get $xp)))
          (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $s) (local.get $d0))))
          (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $s) (local.get $d1))))
          (local.set $s (v128.load32_splat offset=8 (local.get $xp)))
          (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $s) (local.get $d0))))
          (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $s) (local.get $d1))))
          (local.set $s (v128.load32_splat offset=12 (local.get $xp)))
          (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $s) (local.get $d0))))
          (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $s) (local.get $d1))))
          (local.set $xp (i32.add (local.get $xp) (local.get $xRowBytes)))
          (local.set $dp (i32.add (local.get $dp) (local.get $coBytes)))
          (local.set $r (i32.add (local.get $r) (i32.const 1)))
          (br $rLoop)))
        ;; out rows i..i+3, columns j..j+7 += (or, with $assign, =) the accumulators.
        (local.set $op (i32.add (i32.add (local.get $out) (i32.mul (i32.shr_u (local.get $i) (i32.const 2)) (local.get $coBytes))) (local.get $j)))
        (if (i32.eqz (local.get $assign)) (then
          (local.set $a0 (f32x4.add (v128.load (local.get $op)) (local.get $a0)))
          (local.set $a1 (f32x4.add (v128.load offset=16 (local.get $op)) (local.get $a1)))
          (local.set $a2 (f32x4.add (v128.load (i32.add (local.get $op) (local.get $coBytes))) (local.get $a2)))
          (local.set $a3 (f32x4.add (v128.load offset=16 (i32.add (local.get $op) (local.get $coBytes))) (local.get $a3)))
          (local.set $a4 (f32x4.add (v128.load (i32.add (local.get $op) (i32.shl (local.get $coBytes) (i32.const 1)))) (local.get $a4)))
          (local.set $a5 (f32x4.add (v128.load offset=16 (i32.add (local.get $op) (i32.shl (local.get $coBytes) (i32.const 1)))) (local.get $a5)))
          (local.set $a6 (f32x4.add (v128.load (i32.add (local.get $op) (i32.mul (local.get $coBytes) (i32.const 3)))) (local.get $a6)))
          (local.set $a7 (f32x4.add (v128.load offset=16 (i32.add (local.get $op) (i32.mul (local.get $coBytes) (i32.const 3)))) (local.get $a7)))))
        (v128.store (local.get $op) (local.get $a0))
        (v128.store offset=16 (local.get $op) (local.get $a1))
        (local.set $op (i32.add (local.get $op) (local.get $coBytes)))
        (v128.store (local.get $op) (local.get $a2))
        (v128.store offset=16 (local.get $op) (local.get $a3))
        (local.set $op (i32.add (local.get $op) (local.get $coBytes)))
        (v128.store (local.get $op) (local.get $a4))
        (v128.store offset=16 (local.get $op) (local.get $a5))
        (local.set $op (i32.add (local.get $op) (local.get $coBytes)))
        (v128.store (local.get $op) (local.get $a6))
        (v128.store offset=16 (local.get $op) (local.get $a7))
        (local.set $j (i32.add (local.get $j) (i32.const 32)))
        (br $jLoop)))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $iLoop))))

  ;; General convolution filter gradient, out [kh*kw*ci, co]:
  ;;   out[(ky*kw + kx)*ci + c, j] = sum over b, oy, ox of x[b, iy, ix, c] * dy[b, oy, ox, j]
  ;;   with iy = oy*sh + ky*dh - pt, ix = ox*sw + kx*dw - pl (taps outside x are zero padding).
  ;; Blocks of $rows output pixels: their input patches are copied to $patches ([rows, kp]),
  ;; then multiplied as in the pointwise gradient while both stay in L1; no full im2col copy.
  ;; Patch rows are kp = kh*kw*ci rounded up to a multiple of 4 floats, so the sums go to
  ;; $acc ([kp, co] of scratch) and their first kh*kw*ci rows to out at the end.
  (func (export "convFilterGrad")
    (param $x i32) (param $dy i32) (param $out i32) (param $patches i32) (param $acc i32)
    (param $n i32) (param $h i32) (param $w i32) (param $ci i32)
    (param $ho i32) (param $wo i32) (param $kh i32) (param $kw i32)
    (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $pt i32) (param $pl i32) (param $kp i32) (param $co i32) (param $rows i32)
    (local $ciBytes i32) (local $vecBytes i32) (local $kpBytes i32) (local $coBytes i32)
    (local $m i32) (local $r0 i32) (local $count i32) (local $r i32)
    (local $b i32) (local $oy i32) (local $ox i32) (local $ky i32) (local $kx i32)
    (local $iy i32) (local $ix i32) (local $xRow i32) (local $src i32) (local $dst i32)
    (local $i i32) (local $tail i32)
    (local.set $ciBytes (i32.shl (local.get $ci) (i32.const 2)))
    (local.set $vecBytes (i32.and (local.get $ciBytes) (i32.const -16)))
    (local.set $kpBytes (i32.shl (local.get $kp) (i32.const 2)))
    (local.set $coBytes (i32.shl (local.get $co) (i32.const 2)))
    (local.set $tail (i32.mul (i32.mul (i32.mul (local.get $kh) (local.get $kw)) (local.get $ci)) (i32.const 4)))
    (local.set $m (i32.mul (i32.mul (local.get $n) (local.get $ho)) (local.get $wo)))
    (if (i32.eqz (local.get $m)) (then (memory.fill (local.get $acc) (i32.const 0) (i32.mul (local.get $kp) (local.get $coBytes)))))
    (block $blocksDone (loop $blocks
      (br_if $blocksDone (i32.ge_u (local.get $r0) (local.get $m)))
      (local.set $count (select (i32.sub (local.get $m) (local.get $r0)) (local.get $rows)
        (i32.gt_u (i32.add (local.get $r0) (local.get $rows)) (local.get $m))))
      ;; Patches of this block's pixels; (b, oy, ox) of pixel r0 + r advance with r.
      (local.set $r (i32.const 0))
      (block $rDone (loop $rLoop
        (br_if $rDone (i32.ge_u (local.get $r) (local.get $count)))
        (if (i32.eqz (local.get $r)) (then
          (local.set $ox (i32.rem_u (local.get $r0) (local.get $wo)))
          (local.set $oy (i32.rem_u (i32.div_u (local.get $r0) (local.get $wo)) (local.get $ho)))
          (local.set $b (i32.div_u (local.get $r0) (i32.mul (local.get $wo) (local.get $ho))))))
        (local.set $dst (i32.add (local.get $patches) (i32.mul (local.get $r) (local.get $kpBytes))))
        (local.set $ky (i32.const 0))
        (block $kyDone (loop $kyLoop
          (br_if $kyDone (i32.ge_u (local.get $ky) (local.get $kh)))
          (local.set $iy (i32.sub
            (i32.add (i32.mul (local.get $oy) (local.get $sh)) (i32.mul (local.get $ky) (local.get $dh)))
            (local.get $pt)))
          (local.set $xRow (i32.add (local.get $x)
            (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h)) (local.get $iy))
                     (i32.mul (local.get $w) (local.get $ciBytes)))))
          (local.set $kx (i32.const 0))
          (block $kxDone (loop $kxLoop
            (br_if $kxDone (i32.ge_u (local.get $kx) (local.get $kw)))
            (local.set $ix (i32.sub
              (i32.add (i32.mul (local.get $ox) (local.get $sw)) (i32.mul (local.get $kx) (local.get $dw)))
              (local.get $pl)))
            ;; Unsigned compares also reject negative rows and columns (top and left padding).
            (if (i32.and (i32.lt_u (local.get $iy) (local.get $h)) (i32.lt_u (local.get $ix) (local.get $w)))
              (then
                (local.set $src (i32.add (local.get $xRow) (i32.mul (local.get $ix) (local.get $ciBytes))))
                (local.set $i (i32.const 0))
                (block $vDone (loop $vLoop
                  (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecBytes)))
                  (v128.store (i32.add (local.get $dst) (local.get $i)) (v128.load (i32.add (local.get $src) (local.get $i))))
                  (local.set $i (i32.add (local.get $i) (i32.const 16)))
                  (br $vLoop)))
                (block $sDone (loop $sLoop
                  (br_if $sDone (i32.ge_u (local.get $i) (local.get $ciBytes)))
                  (f32.store (i32.add (local.get $dst) (local.get $i)) (f32.load (i32.add (local.get $src) (local.get $i))))
                  (local.set $i (i32.add (local.get $i) (i32.const 4)))
                  (br $sLoop))))
              (else (memory.fill (local.get $dst) (i32.const 0) (local.get $ciBytes))))
            (local.set $dst (i32.add (local.get $dst) (local.get $ciBytes)))
            (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
            (br $kxLoop)))
          (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
          (br $kyLoop)))
        ;; Rounding-up columns are zero so that they add nothing.
        (local.set $i (local.get $tail))
        (block $zDone (loop $zLoop
          (br_if $zDone (i32.ge_u (local.get $i) (local.get $kpBytes)))
          (f32.store (i32.add (i32.add (local.get $patches) (i32.mul (local.get $r) (local.get $kpBytes))) (local.get $i)) (f32.const 0))
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $zLoop)))
        (local.set $ox (i32.add (local.get $ox) (i32.const 1)))
        (if (i32.eq (local.get $ox) (local.get $wo)) (then
          (local.set $ox (i32.const 0))
          (local.set $oy (i32.add (local.get $oy) (i32.const 1)))
          (if (i32.eq (local.get $oy) (local.get $ho)) (then
            (local.set $oy (i32.const 0))
            (local.set $b (i32.add (local.get $b) (i32.const 1)))))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rLoop)))
      (call $accumulateOuterProducts
        (local.get $patches)
        (i32.add (local.get $dy) (i32.mul (local.get $r0) (local.get $coBytes)))
        (local.get $acc) (local.get $count) (local.get $kpBytes) (local.get $kpBytes) (local.get $coBytes) (i32.eqz (local.get $r0)))
      (local.set $r0 (i32.add (local.get $r0) (local.get $count)))
      (br $blocks)))
    (memory.copy (local.get $out) (local.get $acc) (i32.mul (local.get $tail) (local.get $co))))

  ;; Max pooling gradient: each dy value goes to the first largest x tap of its window, as in
  ;; the CPU backend (the stock WASM kernel loses gradients when the batch has several images).
  ;;   dx[b, iy, ix, c] = sum of dy[b, oy, ox, c] over the windows whose max is at (iy, ix)
  ;; Channels 4 at a time: compare, keep the best value and its byte offset per lane, scatter.
  (func (export "maxPoolGrad")
    (param $x i32) (param $dy i32) (param $dx i32)
    (param $n i32) (param $h i32) (param $w i32) (param $c i32)
    (param $ho i32) (param $wo i32) (param $kh i32) (param $kw i32)
    (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $pt i32) (param $pl i32)
    (local $cBytes i32) (local $vecBytes i32)
    (local $b i32) (local $oy i32) (local $ox i32) (local $ky i32) (local $kx i32)
    (local $iy i32) (local $ix i32) (local $i i32) (local $lane i32)
    (local $dyPix i32) (local $imageOff i32) (local $tapOff i32)
    (local $best v128) (local $bestOff v128) (local $v v128) (local $gt v128)
    (local $bestS f32) (local $bestOffS i32) (local $vS f32) (local $at i32)

    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $vecBytes (i32.and (local.get $cBytes) (i32.const -16)))
    (memory.fill (local.get $dx) (i32.const 0)
      (i32.mul (i32.mul (i32.mul (local.get $n) (local.get $h)) (local.get $w)) (local.get $cBytes)))
    (local.set $dyPix (local.get $dy))

    (local.set $b (i32.const 0))
    (block $bDone (loop $bLoop
      (br_if $bDone (i32.ge_u (local.get $b) (local.get $n)))
      (local.set $imageOff (i32.mul (local.get $b) (i32.mul (i32.mul (local.get $h) (local.get $w)) (local.get $cBytes))))
      (local.set $oy (i32.const 0))
      (block $oyDone (loop $oyLoop
        (br_if $oyDone (i32.ge_u (local.get $oy) (local.get $ho)))
        (local.set $ox (i32.const 0))
        (block $oxDone (loop $oxLoop
          (br_if $oxDone (i32.ge_u (local.get $ox) (local.get $wo)))

          ;; Vector part: 4 channels per pass over the window.
          (local.set $i (i32.const 0))
          (block $vDone (loop $vLoop
            (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecBytes)))
            (local.set $best (v128.const f32x4 -inf -inf -inf -inf))
            (local.set $bestOff (v128.const i32x4 -1 -1 -1 -1))
            (local.set $ky (i32.const 0))
            (block $kyDone (loop $kyLoop
              (br_if $kyDone (i32.ge_u (local.get $ky) (local.get $kh)))
              (local.set $iy (i32.sub
                (i32.add (i32.mul (local.get $oy) (local.get $sh)) (i32.mul (local.get $ky) (local.get $dh)))
                (local.get $pt)))
              (if (i32.lt_u (local.get $iy) (local.get $h)) (then
                (local.set $kx (i32.const 0))
                (block $kxDone (loop $kxLoop
                  (br_if $kxDone (i32.ge_u (local.get $kx) (local.get $kw)))
                  (local.set $ix (i32.sub
                    (i32.add (i32.mul (local.get $ox) (local.get $sw)) (i32.mul (local.get $kx) (local.get $dw)))
                    (local.get $pl)))
                  (if (i32.lt_u (local.get $ix) (local.get $w)) (then
                    (local.set $tapOff (i32.add (i32.add (local.get $imageOff) (local.get $i))
                      (i32.mul (i32.add (i32.mul (local.get $iy) (local.get $w)) (local.get $ix)) (local.get $cBytes))))
                    (local.set $v (v128.load (i32.add (local.get $x) (local.get $tapOff))))
                    ;; Strictly greater: the first maximum wins, and NaN never does.
                    (local.set $gt (f32x4.gt (local.get $v) (local.get $best)))
                    (local.set $best (v128.bitselect (local.get $v) (local.get $best) (local.get $gt)))
                    (local.set $bestOff (v128.bitselect
                      (i32x4.add (i32x4.splat (local.get $tapOff)) (v128.const i32x4 0 4 8 12))
                      (local.get $bestOff) (local.get $gt)))))
                  (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                  (br $kxLoop)))))
              (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
              (br $kyLoop)))
            ;; Scatter the 4 lanes (a lane whose window held no number has offset -1).
            (local.set $lane (i32.const 0))
            (block $lDone (loop $lLoop
              (br_if $lDone (i32.ge_u (local.get $lane) (i32.const 4)))
              (local.set $at (i32x4.extract_lane 0 (local.get $bestOff)))
              (if (i32.ge_s (local.get $at) (i32.const 0)) (then
                (f32.store (i32.add (local.get $dx) (local.get $at))
                  (f32.add (f32.load (i32.add (local.get $dx) (local.get $at)))
                    (f32.load (i32.add (i32.add (local.get $dyPix) (local.get $i)) (i32.shl (local.get $lane) (i32.const 2))))))))
              ;; Shift the next lane's offset into lane 0.
              (local.set $bestOff (i8x16.shuffle 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 (local.get $bestOff) (local.get $bestOff)))
              (local.set $lane (i32.add (local.get $lane) (i32.const 1)))
              (br $lLoop)))
            (local.set $i (i32.add (local.get $i) (i32.const 16)))
            (br $vLoop)))

          ;; Remaining channels one at a time.
          (block $sDone (loop $sLoop
            (br_if $sDone (i32.ge_u (local.get $i) (local.get $cBytes)))
            (local.set $bestS (f32.const -inf))
            (local.set $bestOffS (i32.const -1))
            (local.set $ky (i32.const 0))
            (block $kyDone (loop $kyLoop
              (br_if $kyDone (i32.ge_u (local.get $ky) (local.get $kh)))
              (local.set $iy (i32.sub
                (i32.add (i32.mul (local.get $oy) (local.get $sh)) (i32.mul (local.get $ky) (local.get $dh)))
                (local.get $pt)))
              (if (i32.lt_u (local.get $iy) (local.get $h)) (then
                (local.set $kx (i32.const 0))
                (block $kxDone (loop $kxLoop
                  (br_if $kxDone (i32.ge_u (local.get $kx) (local.get $kw)))
                  (local.set $ix (i32.sub
                    (i32.add (i32.mul (local.get $ox) (local.get $sw)) (i32.mul (local.get $kx) (local.get $dw)))
                    (local.get $pl)))
                  (if (i32.lt_u (local.get $ix) (local.get $w)) (then
                    (local.set $tapOff (i32.add (i32.add (local.get $imageOff) (local.get $i))
                      (i32.mul (i32.add (i32.mul (local.get $iy) (local.get $w)) (local.get $ix)) (local.get $cBytes))))
                    (local.set $vS (f32.load (i32.add (local.get $x) (local.get $tapOff))))
                    (if (f32.gt (local.get $vS) (local.get $bestS)) (then
                      (local.set $bestS (local.get $vS))
                      (local.set $bestOffS (local.get $tapOff))))))
                  (local.set $kx (i32.add (local.get $kx) (i32.const 1)))
                  (br $kxLoop)))))
              (local.set $ky (i32.add (local.get $ky) (i32.const 1)))
              (br $kyLoop)))
            (if (i32.ge_s (local.get $bestOffS) (i32.const 0)) (then
              (f32.store (i32.add (local.get $dx) (local.get $bestOffS))
                (f32.add (f32.load (i32.add (local.get $dx) (local.get $bestOffS)))
                  (f32.load (i32.add (local.get $dyPix) (local.get $i)))))))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br $sLoop)))

          (local.set $dyPix (i32.add (local.get $dyPix) (local.get $cBytes)))
          (local.set $ox (i32.add (local.get $ox) (i32.const 1)))
          (br $oxLoop)))
        (local.set $oy (i32.add (local.get $oy) (i32.const 1)))
        (br $oyLoop)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bLoop))))

  ;; One Nesterov-SGD step with coupled weight decay, in one pass instead of eight kernels:
  ;;   g = grad + wd*theta;  v' = first ? g : mu*v + g;  theta' = theta - lr*(g + mu*v')
  (func (export "nesterovUpdate")
    (param $theta i32) (param $v i32) (param $grad i32) (param $outTheta i32) (param $outV i32)
    (param $count i32) (param $lr f32) (param $mu f32) (param $wd f32) (param $first i32)
    (local $end i32) (local $vecEnd i32) (local $i i32)
    (local $t v128) (local $g v128) (local $nv v128)
    (local $lrV v128) (local $muV v128) (local $wdV v128)
    (local $ts f32) (local $gs f32) (local $nvs f32)
    (local.set $end (i32.shl (local.get $count) (i32.const 2)))
    (local.set $vecEnd (i32.and (local.get $end) (i32.const -16)))
    (local.set $lrV (f32x4.splat (local.get $lr)))
    (local.set $muV (f32x4.splat (local.get $mu)))
    (local.set $wdV (f32x4.splat (local.get $wd)))
    (block $vDone (loop $vLoop
      (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecEnd)))
      (local.set $t (v128.load (i32.add (local.get $theta) (local.get $i))))
      (local.set $g (f32x4.add (v128.load (i32.add (local.get $grad) (local.get $i))) (f32x4.mul (local.get $t) (local.get $wdV))))
      (local.set $nv (if (result v128) (local.get $first)
        (then (local.get $g))
        (else (f32x4.add (f32x4.mul (v128.load (i32.add (local.get $v) (local.get $i))) (local.get $muV)) (local.get $g)))))
      (v128.store (i32.add (local.get $outV) (local.get $i)) (local.get $nv))
      (v128.store (i32.add (local.get $outTheta) (local.get $i))
        (f32x4.sub (local.get $t) (f32x4.mul (f32x4.add (local.get $g) (f32x4.mul (local.get $nv) (local.get $muV))) (local.get $lrV))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $vLoop)))
    (block $sDone (loop $sLoop
      (br_if $sDone (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $ts (f32.load (i32.add (local.get $theta) (local.get $i))))
      (local.set $gs (f32.add (f32.load (i32.add (local.get $grad) (local.get $i))) (f32.mul (local.get $ts) (local.get $wd))))
      (local.set $nvs (if (result f32) (local.get $first)
        (then (local.get $gs))
        (else (f32.add (f32.mul (f32.load (i32.add (local.get $v) (local.get $i))) (local.get $mu)) (local.get $gs)))))
      (f32.store (i32.add (local.get $outV) (local.get $i)) (local.get $nvs))
      (f32.store (i32.add (local.get $outTheta) (local.get $i))
        (f32.sub (local.get $ts) (f32.mul (f32.add (local.get $gs) (f32.mul (local.get $nvs) (local.get $mu))) (local.get $lr))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $sLoop))))

  ;; ReLU6 gradient: out = dy where 0 < x < 6, else 0 (one pass instead of five).
  (func (export "relu6Grad") (param $dy i32) (param $x i32) (param $out i32) (param $count i32)
    (local $end i32) (local $vecEnd i32) (local $i i32) (local $xs f32)
    (local.set $end (i32.shl (local.get $count) (i32.const 2)))
    (local.set $vecEnd (i32.and (local.get $end) (i32.const -16)))
    (block $vDone (loop $vLoop
      (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecEnd)))
      (v128.store (i32.add (local.get $out) (local.get $i))
        (v128.and
          (v128.load (i32.add (local.get $dy) (local.get $i)))
          (v128.and
            (f32x4.gt (v128.load (i32.add (local.get $x) (local.get $i))) (v128.const f32x4 0 0 0 0))
            (f32x4.lt (v128.load (i32.add (local.get $x) (local.get $i))) (v128.const f32x4 6 6 6 6)))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $vLoop)))
    (block $sDone (loop $sLoop
      (br_if $sDone (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $xs (f32.load (i32.add (local.get $x) (local.get $i))))
      (f32.store (i32.add (local.get $out) (local.get $i))
        (select
          (f32.load (i32.add (local.get $dy) (local.get $i)))
          (f32.const 0)
          (i32.and (f32.gt (local.get $xs) (f32.const 0)) (f32.lt (local.get $xs) (f32.const 6)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $sLoop))))

  ;; Per-channel sums over the pixels of C-channel tensors, scaled by $scale at the end:
  ;;   mode 0: out1 = Σ u                          (batch mean, with scale 1/M)
  ;;   mode 1: out1 = Σ (u − m)²                    (biased batch variance, with scale 1/M)
  ;;   mode 2: out1 = Σ u,  out2 = Σ u·(x − m)       (dβ and dγ·σ of batch norm)
  ;;   mode 3: out1 = Σ (u − m),  out2 = Σ (u − m)²  (mean and variance in one pass, m a shift)
  ;; With $y (not 0), u is taken as 0 wherever y is not inside (0, 6): the ReLU6 mask of a batch
  ;; norm that clamped its output y. One read of the inputs and no full-size intermediate.
  ;; Pixels are summed in blocks of $block into $acc (2·C floats of scratch) before joining the
  ;; totals, which keeps float32 rounding error near that of a pairwise sum.
  (func (export "channelSums")
    (param $mode i32) (param $u i32) (param $x i32) (param $m i32) (param $pixels i32) (param $c i32)
    (param $out1 i32) (param $out2 i32) (param $acc i32) (param $block i32) (param $scale f32) (param $y i32)
    (local $cBytes i32) (local $vecBytes i32) (local $acc2 i32) (local $p0 i32) (local $pEnd i32)
    (local $p i32) (local $i i32) (local $base i32) (local $uv v128) (local $d v128) (local $us f32) (local $ds f32)
    (local $yv v128) (local $ys f32) (local $two i32)
    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $vecBytes (i32.and (local.get $cBytes) (i32.const -16)))
    (local.set $acc2 (i32.add (local.get $acc) (local.get $cBytes)))
    (local.set $two (i32.ge_u (local.get $mode) (i32.const 2)))
    (memory.fill (local.get $out1) (i32.const 0) (local.get $cBytes))
    (if (local.get $two) (then (memory.fill (local.get $out2) (i32.const 0) (local.get $cBytes))))
    (block $blocksDone (loop $blocks
      (br_if $blocksDone (i32.ge_u (local.get $p0) (local.get $pixels)))
      (local.set $pEnd (select (local.get $pixels) (i32.add (local.get $p0) (local.get $block))
        (i32.gt_u (i32.add (local.get $p0) (local.get $block)) (local.get $pixels))))
      (memory.fill (local.get $acc) (i32.const 0) (i32.shl (local.get $cBytes) (i32.const 1)))
      (local.set $p (local.get $p0))
      (block $pDone (loop $pLoop
        (br_if $pDone (i32.ge_u (local.get $p) (local.get $pEnd)))
        (local.set $base (i32.mul (local.get $p) (local.get $cBytes)))
        (local.set $i (i32.const 0))
        (block $vDone (loop $vLoop
          (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecBytes)))
          (local.set $uv (v128.load (i32.add (local.get $u) (i32.add (local.get $base) (local.get $i)))))
          (if (local.get $y) (then
            (local.set $yv (v128.load (i32.add (local.get $y) (i32.add (local.get $base) (local.get $i)))))
            (local.set $uv (v128.and (local.get $uv)
              (v128.and (f32x4.gt (local.get $yv) (v128.const f32x4 0 0 0 0)) (f32x4.lt (local.get $yv) (v128.const f32x4 6 6 6 6)))))))
          (block $vDoneOne
            (if (i32.eq (local.get $mode) (i32.const 3)) (then
              (local.set $d (f32x4.sub (local.get $uv) (v128.load (i32.add (local.get $m) (local.get $i)))))
              (v128.store (i32.add (local.get $acc) (local.get $i))
                (f32x4.add (v128.load (i32.add (local.get $acc) (local.get $i))) (local.get $d)))
              (v128.store (i32.add (local.get $acc2) (local.get $i))
                (f32x4.add (v128.load (i32.add (local.get $acc2) (local.get $i))) (f32x4.mul (local.get $d) (local.get $d))))
              (br $vDoneOne)))
            (if (i32.eq (local.get $mode) (i32.const 1)) (then
              (local.set $d (f32x4.sub (local.get $uv) (v128.load (i32.add (local.get $m) (local.get $i)))))
              (v128.store (i32.add (local.get $acc) (local.get $i))
                (f32x4.add (v128.load (i32.add (local.get $acc) (local.get $i))) (f32x4.mul (local.get $d) (local.get $d))))
              (br $vDoneOne)))
            (v128.store (i32.add (local.get $acc) (local.get $i))
              (f32x4.add (v128.load (i32.add (local.get $acc) (local.get $i))) (local.get $uv)))
            (if (i32.eq (local.get $mode) (i32.const 2)) (then
              (local.set $d (f32x4.sub (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $i))))
                (v128.load (i32.add (local.get $m) (local.get $i)))))
              (v128.store (i32.add (local.get $acc2) (local.get $i))
                (f32x4.add (v128.load (i32.add (local.get $acc2) (local.get $i))) (f32x4.mul (local.get $uv) (local.get $d)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br $vLoop)))
        (block $sDone (loop $sLoop
          (br_if $sDone (i32.ge_u (local.get $i) (local.get $cBytes)))
          (local.set $us (f32.load (i32.add (local.get $u) (i32.add (local.get $base) (local.get $i)))))
          (if (local.get $y) (then
            (local.set $ys (f32.load (i32.add (local.get $y) (i32.add (local.get $base) (local.get $i)))))
            (local.set $us (select (local.get $us) (f32.const 0)
              (i32.and (f32.gt (local.get $ys) (f32.const 0)) (f32.lt (local.get $ys) (f32.const 6)))))))
          (block $sDoneOne
            (if (i32.eq (local.get $mode) (i32.const 3)) (then
              (local.set $ds (f32.sub (local.get $us) (f32.load (i32.add (local.get $m) (local.get $i)))))
              (f32.store (i32.add (local.get $acc) (local.get $i))
                (f32.add (f32.load (i32.add (local.get $acc) (local.get $i))) (local.get $ds)))
              (f32.store (i32.add (local.get $acc2) (local.get $i))
                (f32.add (f32.load (i32.add (local.get $acc2) (local.get $i))) (f32.mul (local.get $ds) (local.get $ds))))
              (br $sDoneOne)))
            (if (i32.eq (local.get $mode) (i32.const 1)) (then
              (local.set $ds (f32.sub (local.get $us) (f32.load (i32.add (local.get $m) (local.get $i)))))
              (f32.store (i32.add (local.get $acc) (local.get $i))
                (f32.add (f32.load (i32.add (local.get $acc) (local.get $i))) (f32.mul (local.get $ds) (local.get $ds))))
              (br $sDoneOne)))
            (f32.store (i32.add (local.get $acc) (local.get $i))
              (f32.add (f32.load (i32.add (local.get $acc) (local.get $i))) (local.get $us)))
            (if (i32.eq (local.get $mode) (i32.const 2)) (then
              (local.set $ds (f32.sub (f32.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $i))))
                (f32.load (i32.add (local.get $m) (local.get $i)))))
              (f32.store (i32.add (local.get $acc2) (local.get $i))
                (f32.add (f32.load (i32.add (local.get $acc2) (local.get $i))) (f32.mul (local.get $us) (local.get $ds)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $sLoop)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $pLoop)))
      ;; Join the block's sums into the totals (scalar: C floats, once per block).
      (local.set $i (i32.const 0))
      (block $jDone (loop $jLoop
        (br_if $jDone (i32.ge_u (local.get $i) (local.get $cBytes)))
        (f32.store (i32.add (local.get $out1) (local.get $i))
          (f32.add (f32.load (i32.add (local.get $out1) (local.get $i))) (f32.load (i32.add (local.get $acc) (local.get $i)))))
        (if (local.get $two) (then
          (f32.store (i32.add (local.get $out2) (local.get $i))
            (f32.add (f32.load (i32.add (local.get $out2) (local.get $i))) (f32.load (i32.add (local.get $acc2) (local.get $i)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $jLoop)))
      (local.set $p0 (local.get $pEnd))
      (br $blocks)))
    (local.set $i (i32.const 0))
    (block $kDone (loop $kLoop
      (br_if $kDone (i32.ge_u (local.get $i) (local.get $cBytes)))
      (f32.store (i32.add (local.get $out1) (local.get $i)) (f32.mul (f32.load (i32.add (local.get $out1) (local.get $i))) (local.get $scale)))
      (if (local.get $two) (then
        (f32.store (i32.add (local.get $out2) (local.get $i)) (f32.mul (f32.load (i32.add (local.get $out2) (local.get $i))) (local.get $scale)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $kLoop))))

  ;; channelSums for a few channels (C a multiple of 4, up to 32): the same sums and arguments,
  ;; with each vector's sums in registers (two sets, even and odd pixels, so the adds overlap).
  ;; In channelSums they are in $acc, and with 2-8 vectors per pixel every add waits for the
  ;; store of the pixel before (2-4x slower at 8-16 channels). Blocks of pixels are cut into
  ;; runs of about 8 KiB per input, small enough to stay in L1 while each channel vector in turn
  ;; walks the run; the run's sums go to $acc, and the block's to the totals, as in channelSums.
  (func (export "channelSumsNarrow")
    (param $mode i32) (param $u i32) (param $x i32) (param $m i32) (param $pixels i32) (param $c i32)
    (param $out1 i32) (param $out2 i32) (param $acc i32) (param $block i32) (param $scale f32) (param $y i32)
    (local $cBytes i32) (local $step i32) (local $run i32) (local $two i32) (local $acc2 i32)
    (local $p0 i32) (local $pEnd i32) (local $q0 i32) (local $qEnd i32) (local $i i32)
    (local $at i32) (local $at2 i32) (local $last i32)
    (local $mv v128) (local $uv v128) (local $yv v128) (local $d v128)
    (local $s1 v128) (local $s2 v128) (local $t1 v128) (local $t2 v128)
    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $step (i32.shl (local.get $cBytes) (i32.const 1)))
    (local.set $run (i32.div_u (i32.const 8192) (local.get $cBytes)))
    (local.set $two (i32.ge_u (local.get $mode) (i32.const 2)))
    (local.set $acc2 (i32.add (local.get $acc) (local.get $cBytes)))
    (memory.fill (local.get $out1) (i32.const 0) (local.get $cBytes))
    (if (local.get $two) (then (memory.fill (local.get $out2) (i32.const 0) (local.get $cBytes))))
    (block $blocksDone (loop $blocks
      (br_if $blocksDone (i32.ge_u (local.get $p0) (local.get $pixels)))
      (local.set $pEnd (select (local.get $pixels) (i32.add (local.get $p0) (local.get $block))
        (i32.gt_u (i32.add (local.get $p0) (local.get $block)) (local.get $pixels))))
      (memory.fill (local.get $acc) (i32.const 0) (i32.shl (local.get $cBytes) (i32.const 1)))
      (local.set $q0 (local.get $p0))
      (block $runsDone (loop $runs
        (br_if $runsDone (i32.ge_u (local.get $q0) (local.get $pEnd)))
        (local.set $qEnd (select (local.get $pEnd) (i32.add (local.get $q0) (local.get $run))
          (i32.gt_u (i32.add (local.get $q0) (local.get $run)) (local.get $pEnd))))
        (local.set $last (i32.mul (local.get $qEnd) (local.get $cBytes)))
        (local.set $i (i32.const 0))
        (block $vDone (loop $vLoop
          (br_if $vDone (i32.ge_u (local.get $i) (local.get $cBytes)))
          (local.set $mv (if (result v128) (i32.eqz (local.get $mode))
            (then (v128.const i32x4 0 0 0 0))
            (else (v128.load (i32.add (local.get $m) (local.get $i))))))
          (local.set $s1 (v128.const i32x4 0 0 0 0)) (local.set $s2 (v128.const i32x4 0 0 0 0))
          (local.set $t1 (v128.const i32x4 0 0 0 0)) (local.set $t2 (v128.const i32x4 0 0 0 0))
          (local.set $at (i32.add (i32.mul (local.get $q0) (local.get $cBytes)) (local.get $i)))
          (local.set $at2 (i32.add (local.get $at) (local.get $cBytes)))
          (block $modeDone
            (if (i32.eqz (local.get $mode)) (then
              ;; mode 0: Σu: pixels in pairs, then the odd one out.
              (block $pairsDone (loop $pairs
                (br_if $pairsDone (i32.ge_u (local.get $at2) (local.get $last)))
                (local.set $s1 (f32x4.add (local.get $s1) (v128.load (i32.add (local.get $u) (local.get $at)))))
                (local.set $t1 (f32x4.add (local.get $t1) (v128.load (i32.add (local.get $u) (local.get $at2)))))
                (local.set $at (i32.add (local.get $at) (local.get $step)))
                (local.set $at2 (i32.add (local.get $at2) (local.get $step)))
                (br $pairs)))
              (if (i32.lt_u (local.get $at) (local.get $last)) (then
                (local.set $s1 (f32x4.add (local.get $s1) (v128.load (i32.add (local.get $u) (local.get $at)))))))
              (br $modeDone)))
            (if (i32.eq (local.get $mode) (i32.const 3)) (then
              ;; mode 3: Σ(u − m) and Σ(u − m)²: pixels in pairs, then the odd one out.
              (block $pairsDone (loop $pairs
                (br_if $pairsDone (i32.ge_u (local.get $at2) (local.get $last)))
                (local.set $d (f32x4.sub (v128.load (i32.add (local.get $u) (local.get $at))) (local.get $mv)))
                (local.set $s1 (f32x4.add (local.get $s1) (local.get $d)))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $d) (local.get $d))))
                (local.set $d (f32x4.sub (v128.load (i32.add (local.get $u) (local.get $at2))) (local.get $mv)))
                (local.set $t1 (f32x4.add (local.get $t1) (local.get $d)))
                (local.set $t2 (f32x4.add (local.get $t2) (f32x4.mul (local.get $d) (local.get $d))))
                (local.set $at (i32.add (local.get $at) (local.get $step)))
                (local.set $at2 (i32.add (local.get $at2) (local.get $step)))
                (br $pairs)))
              (if (i32.lt_u (local.get $at) (local.get $last)) (then
                (local.set $d (f32x4.sub (v128.load (i32.add (local.get $u) (local.get $at))) (local.get $mv)))
                (local.set $s1 (f32x4.add (local.get $s1) (local.get $d)))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $d) (local.get $d))))))
              (br $modeDone)))
            (if (local.get $y) (then
              ;; mode 2 with y: Σu and Σu·(x − m), u masked where y is not inside (0, 6): pixels in pairs, then the odd one out.
              (block $pairsDone (loop $pairs
                (br_if $pairsDone (i32.ge_u (local.get $at2) (local.get $last)))
                (local.set $uv (v128.load (i32.add (local.get $u) (local.get $at))))
                (local.set $yv (v128.load (i32.add (local.get $y) (local.get $at))))
                (local.set $uv (v128.and (local.get $uv)
                  (v128.and (f32x4.gt (local.get $yv) (v128.const f32x4 0 0 0 0)) (f32x4.lt (local.get $yv) (v128.const f32x4 6 6 6 6)))))
                (local.set $s1 (f32x4.add (local.get $s1) (local.get $uv)))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $uv) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $at))) (local.get $mv)))))
                (local.set $uv (v128.load (i32.add (local.get $u) (local.get $at2))))
                (local.set $yv (v128.load (i32.add (local.get $y) (local.get $at2))))
                (local.set $uv (v128.and (local.get $uv)
                  (v128.and (f32x4.gt (local.get $yv) (v128.const f32x4 0 0 0 0)) (f32x4.lt (local.get $yv) (v128.const f32x4 6 6 6 6)))))
                (local.set $t1 (f32x4.add (local.get $t1) (local.get $uv)))
                (local.set $t2 (f32x4.add (local.get $t2) (f32x4.mul (local.get $uv) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $at2))) (local.get $mv)))))
                (local.set $at (i32.add (local.get $at) (local.get $step)))
                (local.set $at2 (i32.add (local.get $at2) (local.get $step)))
                (br $pairs)))
              (if (i32.lt_u (local.get $at) (local.get $last)) (then
                (local.set $uv (v128.load (i32.add (local.get $u) (local.get $at))))
                (local.set $yv (v128.load (i32.add (local.get $y) (local.get $at))))
                (local.set $uv (v128.and (local.get $uv)
                  (v128.and (f32x4.gt (local.get $yv) (v128.const f32x4 0 0 0 0)) (f32x4.lt (local.get $yv) (v128.const f32x4 6 6 6 6)))))
                (local.set $s1 (f32x4.add (local.get $s1) (local.get $uv)))
                (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $uv) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $at))) (local.get $mv)))))))
              (br $modeDone)))
            ;; mode 2: Σu and Σu·(x − m): pixels in pairs, then the odd one out.
            (block $pairsDone (loop $pairs
              (br_if $pairsDone (i32.ge_u (local.get $at2) (local.get $last)))
              (local.set $uv (v128.load (i32.add (local.get $u) (local.get $at))))
              (local.set $s1 (f32x4.add (local.get $s1) (local.get $uv)))
              (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $uv) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $at))) (local.get $mv)))))
              (local.set $uv (v128.load (i32.add (local.get $u) (local.get $at2))))
              (local.set $t1 (f32x4.add (local.get $t1) (local.get $uv)))
              (local.set $t2 (f32x4.add (local.get $t2) (f32x4.mul (local.get $uv) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $at2))) (local.get $mv)))))
              (local.set $at (i32.add (local.get $at) (local.get $step)))
              (local.set $at2 (i32.add (local.get $at2) (local.get $step)))
              (br $pairs)))
            (if (i32.lt_u (local.get $at) (local.get $last)) (then
              (local.set $uv (v128.load (i32.add (local.get $u) (local.get $at))))
              (local.set $s1 (f32x4.add (local.get $s1) (local.get $uv)))
              (local.set $s2 (f32x4.add (local.get $s2) (f32x4.mul (local.get $uv) (f32x4.sub (v128.load (i32.add (local.get $x) (local.get $at))) (local.get $mv))))))))
          (v128.store (i32.add (local.get $acc) (local.get $i))
            (f32x4.add (v128.load (i32.add (local.get $acc) (local.get $i))) (f32x4.add (local.get $s1) (local.get $t1))))
          (v128.store (i32.add (local.get $acc2) (local.get $i))
            (f32x4.add (v128.load (i32.add (local.get $acc2) (local.get $i))) (f32x4.add (local.get $s2) (local.get $t2))))
          (local.set $i (i32.add (local.get $i) (i32.const 16)))
          (br $vLoop)))
        (local.set $q0 (local.get $qEnd))
        (br $runs)))
      ;; Join the block's sums into the totals.
      (local.set $i (i32.const 0))
      (block $jDone (loop $jLoop
        (br_if $jDone (i32.ge_u (local.get $i) (local.get $cBytes)))
        (v128.store (i32.add (local.get $out1) (local.get $i))
          (f32x4.add (v128.load (i32.add (local.get $out1) (local.get $i))) (v128.load (i32.add (local.get $acc) (local.get $i)))))
        (if (local.get $two) (then
          (v128.store (i32.add (local.get $out2) (local.get $i))
            (f32x4.add (v128.load (i32.add (local.get $out2) (local.get $i))) (v128.load (i32.add (local.get $acc2) (local.get $i)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $jLoop)))
      (local.set $p0 (local.get $pEnd))
      (br $blocks)))
    (local.set $i (i32.const 0))
    (block $kDone (loop $kLoop
      (br_if $kDone (i32.ge_u (local.get $i) (local.get $cBytes)))
      (v128.store (i32.add (local.get $out1) (local.get $i))
        (f32x4.mul (v128.load (i32.add (local.get $out1) (local.get $i))) (f32x4.splat (local.get $scale))))
      (if (local.get $two) (then
        (v128.store (i32.add (local.get $out2) (local.get $i))
          (f32x4.mul (v128.load (i32.add (local.get $out2) (local.get $i))) (f32x4.splat (local.get $scale))))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $kLoop))))

  ;; Per-channel fused multiply-add over pixels of C channels (a, b, cc are [C] vectors):
  ;;   out = u*a + x*b + cc   (the batch-norm input gradient in one pass instead of three)
  ;; with u taken as 0 wherever y is not inside (0, 6) when $y is not 0 (as in channelSums).
  (func (export "channelAffine2")
    (param $u i32) (param $x i32) (param $out i32) (param $pixels i32) (param $c i32)
    (param $a i32) (param $b i32) (param $cc i32) (param $y i32)
    (local $cBytes i32) (local $vecBytes i32) (local $p i32) (local $i i32) (local $off i32)
    (local $uv v128) (local $yv v128) (local $us f32) (local $ys f32)
    (local.set $cBytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $vecBytes (i32.and (local.get $cBytes) (i32.const -16)))
    (block $pDone (loop $pLoop
      (br_if $pDone (i32.ge_u (local.get $p) (local.get $pixels)))
      (local.set $i (i32.const 0))
      (block $vDone (loop $vLoop
        (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecBytes)))
        (local.set $off (i32.add (local.get $i) (i32.mul (local.get $p) (local.get $cBytes))))
        (local.set $uv (v128.load (i32.add (local.get $u) (local.get $off))))
        (if (local.get $y) (then
          (local.set $yv (v128.load (i32.add (local.get $y) (local.get $off))))
          (local.set $uv (v128.and (local.get $uv)
            (v128.and (f32x4.gt (local.get $yv) (v128.const f32x4 0 0 0 0)) (f32x4.lt (local.get $yv) (v128.const f32x4 6 6 6 6)))))))
        (v128.store (i32.add (local.get $out) (local.get $off))
          (f32x4.add
            (f32x4.add
              (f32x4.mul (local.get $uv) (v128.load (i32.add (local.get $a) (local.get $i))))
              (f32x4.mul (v128.load (i32.add (local.get $x) (local.get $off))) (v128.load (i32.add (local.get $b) (local.get $i)))))
            (v128.load (i32.add (local.get $cc) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $vLoop)))
      (block $sDone (loop $sLoop
        (br_if $sDone (i32.ge_u (local.get $i) (local.get $cBytes)))
        (local.set $off (i32.add (local.get $i) (i32.mul (local.get $p) (local.get $cBytes))))
        (local.set $us (f32.load (i32.add (local.get $u) (local.get $off))))
        (if (local.get $y) (then
          (local.set $ys (f32.load (i32.add (local.get $y) (local.get $off))))
          (local.set $us (select (local.get $us) (f32.const 0)
            (i32.and (f32.gt (local.get $ys) (f32.const 0)) (f32.lt (local.get $ys) (f32.const 6)))))))
        (f32.store (i32.add (local.get $out) (local.get $off))
          (f32.add
            (f32.add
              (f32.mul (local.get $us) (f32.load (i32.add (local.get $a) (local.get $i))))
              (f32.mul (f32.load (i32.add (local.get $x) (local.get $off))) (f32.load (i32.add (local.get $b) (local.get $i)))))
            (f32.load (i32.add (local.get $cc) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $sLoop)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $pLoop))))

  ;; Soft-label cross-entropy over $b rows of $n logits z, their softmax p and targets t:
  ;; per row r, out [r, 0..3] = max z, max p, Σ t·z, Σ t (the loss needs a log per row, taken by
  ;; the caller), and grad = (p·Σ t − t)·$invB, the loss's gradient. n a multiple of 4.
  (func (export "softCrossEntropyRows")
    (param $z i32) (param $p i32) (param $t i32) (param $grad i32) (param $out i32) (param $b i32) (param $n i32) (param $invB f32)
    (local $r i32) (local $i i32) (local $rowBytes i32) (local $row i32)
    (local $zMax v128) (local $pMax v128) (local $tz v128) (local $mass v128) (local $tv v128) (local $zv v128) (local $massS f32)
    (local.set $rowBytes (i32.shl (local.get $n) (i32.const 2)))
    (block $rDone (loop $rLoop
      (br_if $rDone (i32.ge_u (local.get $r) (local.get $b)))
      (local.set $row (i32.mul (local.get $r) (local.get $rowBytes)))
      (local.set $zMax (v128.const f32x4 -inf -inf -inf -inf)) (local.set $pMax (v128.const f32x4 0 0 0 0))
      (local.set $tz (v128.const f32x4 0 0 0 0)) (local.set $mass (v128.const f32x4 0 0 0 0))
      (local.set $i (i32.const 0))
      (block $sDone (loop $sLoop
        (br_if $sDone (i32.ge_u (local.get $i) (local.get $rowBytes)))
        (local.set $zv (v128.load (i32.add (local.get $z) (i32.add (local.get $row) (local.get $i)))))
        (local.set $tv (v128.load (i32.add (local.get $t) (i32.add (local.get $row) (local.get $i)))))
        (local.set $zMax (f32x4.max (local.get $zMax) (local.get $zv)))
        (local.set $pMax (f32x4.max (local.get $pMax) (v128.load (i32.add (local.get $p) (i32.add (local.get $row) (local.get $i))))))
        (local.set $tz (f32x4.add (local.get $tz) (f32x4.mul (local.get $tv) (local.get $zv))))
        (local.set $mass (f32x4.add (local.get $mass) (local.get $tv)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $sLoop)))
      (local.set $massS (call $laneSum (local.get $mass)))
      (f32.store (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 4)))
        (f32.max (f32.max (f32x4.extract_lane 0 (local.get $zMax)) (f32x4.extract_lane 1 (local.get $zMax)))
                 (f32.max (f32x4.extract_lane 2 (local.get $zMax)) (f32x4.extract_lane 3 (local.get $zMax)))))
      (f32.store offset=4 (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 4)))
        (f32.max (f32.max (f32x4.extract_lane 0 (local.get $pMax)) (f32x4.extract_lane 1 (local.get $pMax)))
                 (f32.max (f32x4.extract_lane 2 (local.get $pMax)) (f32x4.extract_lane 3 (local.get $pMax)))))
      (f32.store offset=8 (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 4))) (call $laneSum (local.get $tz)))
      (f32.store offset=12 (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 4))) (local.get $massS))
      (local.set $i (i32.const 0))
      (block $gDone (loop $gLoop
        (br_if $gDone (i32.ge_u (local.get $i) (local.get $rowBytes)))
        (v128.store (i32.add (local.get $grad) (i32.add (local.get $row) (local.get $i)))
          (f32x4.mul
            (f32x4.sub
              (f32x4.mul (v128.load (i32.add (local.get $p) (i32.add (local.get $row) (local.get $i)))) (f32x4.splat (local.get $massS)))
              (v128.load (i32.add (local.get $t) (i32.add (local.get $row) (local.get $i)))))
            (f32x4.splat (local.get $invB))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $gLoop)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rLoop))))

  ;; dst += src over $count floats: joins the partial sums of a kernel cut into parts.
  (func (export "addInto") (param $dst i32) (param $src i32) (param $count i32)
    (local $end i32) (local $vecEnd i32) (local $i i32)
    (local.set $end (i32.shl (local.get $count) (i32.const 2)))
    (local.set $vecEnd (i32.and (local.get $end) (i32.const -16)))
    (block $vDone (loop $vLoop
      (br_if $vDone (i32.ge_u (local.get $i) (local.get $vecEnd)))
      (v128.store (i32.add (local.get $dst) (local.get $i))
        (f32x4.add (v128.load (i32.add (local.get $dst) (local.get $i))) (v128.load (i32.add (local.get $src) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $vLoop)))
    (block $sDone (loop $sLoop
      (br_if $sDone (i32.ge_u (local.get $i) (local.get $end)))
      (f32.store (i32.add (local.get $dst) (local.get $i))
        (f32.add (f32.load (i32.add (local.get $dst) (local.get $i))) (f32.load (i32.add (local.get $src) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $sLoop))))
)
