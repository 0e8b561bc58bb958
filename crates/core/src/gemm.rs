//! The int8 GEMM every engine runs, written once: the kernel-table entry
//! ([`Kernel`]), weights packed for the kernels of one path ([`PackedB`]),
//! and one blocked, threaded driver ([`run`]) generic over an output
//! [`Stage`] and the engine's threads ([`Workers`]).
//!
//! An engine owns what depends on the ISA: for each path a table of kernels
//! (preferred first), each entry with its register tile (`mr × nr`, `kr` k
//! per k-unit), how activations are packed for it, a check run at pack time
//! that says up to which activation value the kernel is exact for a given
//! weight matrix (255: every u8 input), the microkernel itself, and the
//! output stage that turns accumulator tiles into results. Everything else
//! is here: weight packing (one layout `[N/nr][ku][nr][kr]` for every
//! kernel), the choice of kernel per call, cache blocking, the split into
//! tasks, and handing each finished tile to the stage.
//!
//! Every output element is computed by the same instructions whatever the
//! split, so results never depend on the thread count.
//!
//! This module holds no `unsafe`: a kernel's `run` is a safe function that
//! checks its operands ([`Micro::assert_fits`]) before entering SIMD code,
//! and an engine exposes a table only for a path whose detection succeeded.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Element type of both packed operands of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// One byte: u8 activations (raw, or stored as `x − a_shift`) and s8 weights.
    I8,
    /// Little-endian int16: activations and weights widened.
    I16,
}

impl Elem {
    pub const fn bytes(self) -> usize {
        match self {
            Elem::I8 => 1,
            Elem::I16 => 2,
        }
    }
}

/// How one packed activation panel (`mr` rows) is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ALayout {
    /// Row `r` at byte `r·lda`, its k-units consecutive: the kernel
    /// broadcasts each row's unit through a per-row pointer (x86).
    Rows,
    /// `[ku][mr][unit]`: the kernel loads one unit of every row at once (ARM).
    Interleaved,
}

/// The register tile and operand layout of a microkernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Rows of the output tile.
    pub mr: usize,
    /// Columns of the output tile (one packed weight panel).
    pub nr: usize,
    /// k per k-unit.
    pub kr: usize,
    pub elem: Elem,
    pub a: ALayout,
}

impl Shape {
    /// Bytes of one k-unit of one row (activations) or one column (weights).
    pub const fn unit_bytes(&self) -> usize {
        self.kr * self.elem.bytes()
    }
    /// k-units covering `k`.
    pub const fn units(&self, k: usize) -> usize {
        k.div_ceil(self.kr)
    }
    /// Bytes of one packed activation panel (`mr` rows) for reduction length `k`.
    pub const fn a_panel_bytes(&self, k: usize) -> usize {
        self.units(k) * self.unit_bytes() * self.mr
    }
    /// Bytes of one packed weight panel (`nr` columns).
    pub const fn b_panel_bytes(&self, k: usize) -> usize {
        self.units(k) * self.unit_bytes() * self.nr
    }
    /// Bytes between consecutive k-units inside an activation panel.
    pub const fn a_unit_stride(&self) -> usize {
        match self.a {
            ALayout::Rows => self.unit_bytes(),
            ALayout::Interleaved => self.unit_bytes() * self.mr,
        }
    }
}

/// The operands of one microkernel call:
/// `c[r][j] (+)= Σ_u Σ_t a[r][u][t]·b[u][j][t]` over `ku` k-units, for rows
/// `r < mrows`, in wrapping int32.
#[derive(Debug)]
pub struct Micro<'a> {
    /// The activation panel from the call's first k-unit on.
    pub a: &'a [u8],
    /// Bytes between activation rows (`ALayout::Rows`; the panel's row length).
    pub lda: usize,
    /// The weight panel from the call's first k-unit on.
    pub b: &'a [u8],
    /// The `mr × nr` accumulator tile, row stride `nr`.
    pub c: &'a mut [i32],
    pub ku: usize,
    /// Rows of the tile that matter (`1..=mr`).
    pub mrows: usize,
    /// Start from zero; else add onto the tile already in `c`.
    pub init: bool,
}

impl Micro<'_> {
    /// Panics unless the operands hold everything a kernel of shape `s` reads
    /// and writes: the bounds every microkernel relies on.
    #[inline]
    pub fn assert_fits(&self, s: &Shape) {
        let unit = s.unit_bytes();
        assert!(
            self.mrows >= 1 && self.mrows <= s.mr,
            "mrows {}",
            self.mrows
        );
        let a_need = match s.a {
            ALayout::Rows => {
                assert!(self.lda >= self.ku * unit, "lda {}", self.lda);
                (self.mrows - 1) * self.lda + self.ku * unit
            }
            ALayout::Interleaved => self.ku * unit * s.mr,
        };
        assert!(self.a.len() >= a_need, "activation panel too short");
        assert!(
            self.b.len() >= self.ku * unit * s.nr,
            "weight panel too short"
        );
        assert!(self.c.len() >= s.mr * s.nr, "tile too short");
    }
}

/// One activation panel to pack: rows `row0 .. row0 + nrows` (`nrows ≤ mr`).
pub struct APanel<'a> {
    pub k: usize,
    pub row0: usize,
    pub nrows: usize,
    /// `fill(row, dst)` writes row `row`'s K u8 values (it may quantize on the fly).
    pub fill: &'a (dyn Fn(usize, &mut [u8]) + Sync),
    /// The panel, [`Shape::a_panel_bytes`] long, in the kernel's layout; the
    /// k padding must be zero (rows past `nrows` may be left as they are).
    pub dst: &'a mut [u8],
    /// `Σ_k x` (raw u8 values, wrapping int32) of each row, when `need_sums`.
    pub sums: &'a mut [i32],
    pub need_sums: bool,
    /// Per-worker scratch space.
    pub scratch: &'a mut Vec<u8>,
}

/// What a kernel entry is made of (see [`Kernel`]).
#[derive(Clone, Copy)]
pub struct KernelSpec {
    pub name: &'static str,
    pub shape: Shape,
    pub a_shift: i32,
    pub features: &'static str,
    pub pack_a: fn(&mut APanel<'_>),
    pub exact: fn(&[i8], usize, usize) -> u8,
    pub run: fn(Micro<'_>),
    pub peak: Option<fn() -> f64>,
}

/// One entry of a path's kernel table.
pub struct Kernel {
    /// The microkernel's file name, e.g. `gemm_u8i8_8x32c4_avx512vnni`.
    pub name: &'static str,
    pub shape: Shape,
    /// Activations are stored as `x − a_shift` (128 where the instruction
    /// multiplies s8 by s8, e.g. `sdot`); the output stage adds
    /// `a_shift·Σ_k w` back. 0 otherwise.
    pub a_shift: i32,
    /// Target features the microkernel needs (`#[target_feature]` names).
    pub features: &'static str,
    /// Packs one activation panel.
    pub pack_a: fn(&mut APanel<'_>),
    /// Run at pack time: the largest activation value for which the kernel
    /// is exact with the weights `w` (`[n, k]` row-major): 255 = exact for
    /// every u8 input. The last kernel of a table must say 255 for any `w`.
    pub exact: fn(&[i8], usize, usize) -> u8,
    /// The microkernel (safe: it checks its operands first).
    pub run: fn(Micro<'_>),
    /// One core's register-only throughput of the kernel's instruction
    /// sequence, GOP/s (2 ops per multiply-accumulate); None if not measured.
    pub peak: Option<fn() -> f64>,
    /// The second pass of a two-pass kernel ([`Kernel::two_pass`]): `run`
    /// multiplies bounded weights, this pass adds a sparse remainder.
    pub pair: Option<&'static PairPass>,
    calls: AtomicUsize,
}

impl Kernel {
    pub const fn new(s: KernelSpec) -> Kernel {
        Kernel {
            name: s.name,
            shape: s.shape,
            a_shift: s.a_shift,
            features: s.features,
            pack_a: s.pack_a,
            exact: s.exact,
            run: s.run,
            peak: s.peak,
            pair: None,
            calls: AtomicUsize::new(0),
        }
    }

    /// A two-pass kernel: at pack time `pass.split` splits each weight matrix
    /// into a bounded part, which `s.run` multiplies, and a sparse remainder
    /// of adjacent-pair corrections, which `pass.run` adds onto the
    /// accumulator tiles once K is done (see [`PairPass`]).
    pub const fn two_pass(s: KernelSpec, pass: &'static PairPass) -> Kernel {
        let mut k = Kernel::new(s);
        k.pair = Some(pass);
        k
    }

    /// GEMM calls that ran this kernel in this process (tests use it to prove
    /// that a path's kernels really ran).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// k covered by one k-block of the driver under `blk` (K is walked in
    /// blocks whose weights stay in L1): sweeps test K around it.
    pub fn k_block(&self, blk: &Blocking) -> usize {
        let s = &self.shape;
        (blk.b_block_bytes / (s.nr * s.unit_bytes())).max(1) * s.kr
    }
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}x{}c{})",
            self.name, self.shape.mr, self.shape.nr, self.shape.kr
        )
    }
}

/// An exact check for kernels that are exact for every input.
pub fn always_exact(_w: &[i8], _n: usize, _k: usize) -> u8 {
    255
}

/// The kernel table of one path, preferred kernel first; the last is exact
/// for every input. Engines make one when the path is detected.
#[derive(Debug, Clone, Copy)]
pub struct Table(&'static [Kernel]);

impl Table {
    pub fn new(kernels: &'static [Kernel]) -> Table {
        assert!(!kernels.is_empty(), "a kernel table needs a kernel");
        Table(kernels)
    }
    pub fn kernels(&self) -> &'static [Kernel] {
        self.0
    }
}

/// One correction of a two-pass kernel's remainder: `r` is added to the
/// bounded weights of the adjacent pair `k = 2q, 2q + 1` of column `col`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairEntry {
    /// Column (output channel), `< n`.
    pub col: u32,
    /// Pair index, `< ⌈k / 2⌉` (`r[1]` is 0 when `2q + 1 = k`).
    pub q: u32,
    pub r: [i8; 2],
    /// Starts a new group of its column: the second pass may sum the
    /// products of one group in a narrow accumulator, and the split
    /// decides where a group must end for that sum to stay exact.
    pub new_group: bool,
}

/// A weight matrix split for a two-pass kernel at pack time.
#[derive(Debug, Clone)]
pub struct Split {
    /// `[n, k]`: the part the kernel's first pass multiplies.
    pub bounded: Vec<i8>,
    /// The remainder (`bounded + remainder = w`), sorted by column, a
    /// column's groups in order.
    pub entries: Vec<PairEntry>,
    /// Whether the two passes pay for these weights; if not, the packed
    /// weight skips the kernel (a later kernel of the table runs them).
    pub worth: bool,
}

/// The packed activations of one row panel, handed to [`PairPass::pack_a`]
/// to derive the second pass's own activation operand from them.
#[derive(Debug)]
pub struct PairA<'a> {
    /// The panel as the kernel's `pack_a` wrote it (rows `lda` apart, `k`
    /// values each, zero padding after them).
    pub rows: &'a [u8],
    pub lda: usize,
    /// Rows that hold data (`1..=mr`).
    pub nrows: usize,
    pub k: usize,
    /// [`PairPass::a_bytes`] bytes.
    pub dst: &'a mut [u8],
}

/// The operands of one call of a second pass: the remainder of one weight
/// panel against `panels` consecutive row panels of the activations.
#[derive(Debug)]
pub struct PairMicro<'a> {
    /// The packed activations of the row panels, `pa` bytes apart; each
    /// panel's second operand ([`PairPass::pack_a`]) starts `a_off` bytes in.
    pub a: &'a [u8],
    pub pa: usize,
    pub a_off: usize,
    /// Row panels (`≥ 1`); every one but the last holds `mr` rows.
    pub panels: usize,
    /// Rows of the last panel (`1..=mr`).
    pub last_rows: usize,
    pub rem: PairPanel<'a>,
    /// The panels' accumulator tiles, `mr × nr` each (row stride `nr`),
    /// consecutive; the pass adds its products onto them.
    pub c: &'a mut [i32],
}

/// The remainder of one weight panel as a second pass reads it: groups of
/// entries, each group one column's. Made only from a [`Remainder`], whose
/// constructor checked every index: `col < nr`, `start < end ≤
/// entries().len()`, every entry's `q < q_end() ≤ ⌈k / 2⌉`.
#[derive(Debug, Clone, Copy)]
pub struct PairPanel<'a> {
    groups: &'a [PairGroup],
    entries: &'a [PairRec],
    q_end: usize,
}

impl<'a> PairPanel<'a> {
    pub fn groups(&self) -> &'a [PairGroup] {
        self.groups
    }
    pub fn entries(&self) -> &'a [PairRec] {
        self.entries
    }
    /// One past the largest pair index of the panel's entries.
    pub fn q_end(&self) -> usize {
        self.q_end
    }
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// A group of one panel's remainder: entries `start..end` of the panel, all
/// of column `col` (`< nr`); `first` (0/1) marks the column's first group.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairGroup {
    pub col: u32,
    pub first: u32,
    pub start: u32,
    pub end: u32,
}

/// One remainder entry as a second pass reads it: the pair index and the
/// pair `(r0, r1)` twice (`[r0, r1, r0, r1]`: one 32-bit broadcast fills
/// 16-bit lanes with it).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairRec {
    pub q: u32,
    pub r: [i8; 4],
}

/// The sparse remainder of a split weight matrix, by weight panel (`nr`
/// columns), recorded in the packed weight.
#[derive(Debug, Clone)]
pub struct Remainder {
    nr: usize,
    /// Per weight panel: its groups, `groups[panel_groups[p]..panel_groups[p + 1]]`.
    panel_groups: Vec<u32>,
    /// Per weight panel: its entries start (groups index from it).
    panel_entries: Vec<u32>,
    panel_q_end: Vec<u32>,
    groups: Vec<PairGroup>,
    entries: Vec<PairRec>,
    /// Pairs of the matrix (`n · ⌈k / 2⌉`).
    total_pairs: usize,
    /// Groups that are not their column's first.
    extra_groups: usize,
}

impl Remainder {
    /// Build from a split's entries (sorted by column); panics on an entry
    /// out of range or out of order (a bug in the split).
    pub fn new(entries: &[PairEntry], n: usize, k: usize, nr: usize) -> Remainder {
        let qn = k.div_ceil(2);
        let npanels = n.div_ceil(nr);
        let mut r = Remainder {
            nr,
            panel_groups: vec![0],
            panel_entries: vec![0],
            panel_q_end: Vec::with_capacity(npanels),
            groups: Vec::new(),
            entries: Vec::with_capacity(entries.len()),
            total_pairs: n * qn,
            extra_groups: 0,
        };
        let mut i = 0;
        for p in 0..npanels {
            let base = r.entries.len();
            let mut q_end = 0usize;
            let mut last_col: Option<u32> = None;
            while i < entries.len() && (entries[i].col as usize) < (p + 1) * nr {
                let e = entries[i];
                assert!((e.col as usize) < n, "remainder column {} of {n}", e.col);
                assert!((e.q as usize) < qn, "remainder pair {} of {qn}", e.q);
                assert!(
                    2 * e.q as usize + 1 < k || e.r[1] == 0,
                    "remainder beyond k"
                );
                assert!(
                    last_col.is_none_or(|c| c <= e.col),
                    "remainder entries out of column order"
                );
                let col = e.col - (p * nr) as u32;
                let new_col = last_col != Some(e.col);
                if new_col || e.new_group {
                    let at = (r.entries.len() - base) as u32;
                    if r.groups.len() > r.panel_groups[p] as usize {
                        r.groups.last_mut().expect("a group").end = at;
                    }
                    if !new_col {
                        r.extra_groups += 1;
                    }
                    r.groups.push(PairGroup {
                        col,
                        first: new_col as u32,
                        start: at,
                        end: at,
                    });
                }
                last_col = Some(e.col);
                q_end = q_end.max(e.q as usize + 1);
                r.entries.push(PairRec {
                    q: e.q,
                    r: [e.r[0], e.r[1], e.r[0], e.r[1]],
                });
                i += 1;
            }
            if r.groups.len() > r.panel_groups[p] as usize {
                r.groups.last_mut().expect("a group").end = (r.entries.len() - base) as u32;
            }
            r.panel_groups.push(r.groups.len() as u32);
            r.panel_entries.push(r.entries.len() as u32);
            r.panel_q_end.push(q_end as u32);
        }
        assert_eq!(i, entries.len(), "remainder entries out of column order");
        r
    }

    /// Panel `j`'s remainder (empty when it has none).
    pub fn panel(&self, j: usize) -> PairPanel<'_> {
        let g = self.panel_groups[j] as usize..self.panel_groups[j + 1] as usize;
        let e = self.panel_entries[j] as usize..self.panel_entries[j + 1] as usize;
        PairPanel {
            groups: &self.groups[g],
            entries: &self.entries[e],
            q_end: self.panel_q_end[j] as usize,
        }
    }

    /// Entries (pairs with a correction).
    pub fn pairs(&self) -> usize {
        self.entries.len()
    }

    /// Fraction of the matrix's adjacent pairs that carry a correction.
    pub fn density(&self) -> f64 {
        self.entries.len() as f64 / self.total_pairs.max(1) as f64
    }

    /// Groups beyond each column's first (their sums need wider accumulators).
    pub fn extra_groups(&self) -> usize {
        self.extra_groups
    }

    /// Add the remainder back onto `w` (`[n, k]`, the bounded part).
    fn add_to(&self, w: &mut [i8], k: usize) {
        for p in 0..self.panel_groups.len() - 1 {
            let pp = self.panel(p);
            for g in pp.groups() {
                let col = p * self.nr + g.col as usize;
                for e in &pp.entries()[g.start as usize..g.end as usize] {
                    let at = col * k + 2 * e.q as usize;
                    w[at] = w[at].wrapping_add(e.r[0]);
                    if e.r[1] != 0 {
                        w[at + 1] = w[at + 1].wrapping_add(e.r[1]);
                    }
                }
            }
        }
    }
}

/// The second pass of a two-pass kernel ([`Kernel::two_pass`]).
///
/// At pack time `split` divides the weights into a bounded part (packed for
/// the kernel's `run`, which is exact on it for every input) and a sparse
/// remainder of adjacent-pair corrections. Each GEMM call packs a second
/// activation operand per row panel (`pack_a`, from the packed panel) and,
/// once a weight panel's K loop has finished on a block of row panels,
/// `run` adds the remainder's products onto their tiles, before the output
/// stage sees them. The sum of both passes is the exact `Σ x·w` (wrapping
/// int32, like every kernel).
pub struct PairPass {
    /// The second pass's microkernel file, e.g. `remainder_u8i8_16x16c2_avx2`.
    pub name: &'static str,
    /// The split of `w` (`[n, k]`).
    pub split: fn(&[i8], usize, usize) -> Split,
    /// Bytes of one row panel's second operand for reduction length `k`.
    pub a_bytes: fn(usize) -> usize,
    pub pack_a: fn(PairA<'_>),
    /// Safe: checks its operands, then enters SIMD code.
    pub run: fn(PairMicro<'_>),
}

impl fmt::Debug for PairPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

thread_local! {
    static EVERY_SPLIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with every split accepted ([`Split::worth`] ignored) for weights
/// packed on this thread: lets testers drive a two-pass kernel on remainders
/// too dense to pay (every pair corrected).
pub fn with_every_split<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            EVERY_SPLIT.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(EVERY_SPLIT.with(|c| c.replace(true)));
    f()
}

/// Bytes whose first one sits on a cache line (64 bytes): the kernels'
/// 64-byte weight loads then never straddle two lines.
struct Aligned {
    buf: Vec<u8>,
    off: usize,
}

impl Aligned {
    const ALIGN: usize = 64;
    fn zeroed(len: usize) -> Aligned {
        let buf = vec![0u8; len + Self::ALIGN - 1];
        let off = buf.as_ptr().align_offset(Self::ALIGN).min(Self::ALIGN - 1);
        Aligned { buf, off }
    }
    fn len(&self) -> usize {
        self.buf.len() + 1 - Self::ALIGN
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len()]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.off, self.len());
        &mut self.buf[off..off + len]
    }
}

/// Weights packed for one kernel, and that kernel's exactness verdict.
pub struct Layout {
    pub kernel: &'static Kernel,
    /// The largest activation for which `kernel` is exact with these
    /// weights (its pack-time check); 255 = exact on full-range u8 input.
    pub exact_up_to: u8,
    data: Aligned,
    panel_bytes: usize,
    /// A two-pass kernel's remainder (`data` then holds the bounded part).
    remainder: Option<Remainder>,
}

impl Layout {
    /// Whether the kernel is exact with these weights for every u8 input.
    pub fn full_range_exact(&self) -> bool {
        self.exact_up_to == 255
    }
    /// The remainder of a two-pass kernel's split, recorded at pack time.
    pub fn remainder(&self) -> Option<&Remainder> {
        self.remainder.as_ref()
    }
    /// Weight micro-panel `j` (columns `j·nr ..`), `[ku][nr][kr]`.
    pub fn panel(&self, j: usize) -> &[u8] {
        &self.data.bytes()[j * self.panel_bytes..(j + 1) * self.panel_bytes]
    }
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} exact up to {}, {} bytes",
            self.kernel,
            self.exact_up_to,
            self.data.len()
        )?;
        if let Some(r) = &self.remainder {
            write!(
                f,
                ", remainder {} pairs ({:.2}%)",
                r.pairs(),
                100.0 * r.density()
            )?;
        }
        Ok(())
    }
}

/// A `[N, K]` int8 weight packed for the kernels of one path's table, in
/// table order up to the first that is exact for every input (the later
/// ones could never be chosen): each kernel whose check allows some input,
/// and each two-pass kernel whose split pays for these weights.
#[derive(Debug)]
pub struct PackedB {
    n: usize,
    k: usize,
    layouts: Vec<Layout>,
}

impl PackedB {
    /// Pack `w` (`[n, k]` row-major raw int8) for the kernels of `table`.
    pub fn new(table: Table, w: &[i8], n: usize, k: usize) -> PackedB {
        assert_eq!(w.len(), n * k);
        let ks = table.kernels();
        let mut layouts = Vec::new();
        for (i, kern) in ks.iter().enumerate() {
            let exact_up_to = (kern.exact)(w, n, k);
            let last = i + 1 == ks.len();
            assert!(
                !last || exact_up_to == 255,
                "{kern:?}: the last kernel of a table must be exact for every input"
            );
            // A kernel exact only for all-zero activations is never worth it.
            if exact_up_to == 0 && !last {
                continue;
            }
            let (data, remainder) = match kern.pair {
                Some(pass) => {
                    let split = (pass.split)(w, n, k);
                    assert_eq!(split.bounded.len(), n * k, "{kern:?}: split size");
                    if !split.worth && !last && !EVERY_SPLIT.with(|c| c.get()) {
                        continue;
                    }
                    let rem = Remainder::new(&split.entries, n, k, kern.shape.nr);
                    (pack_b(&kern.shape, &split.bounded, n, k), Some(rem))
                }
                None => (pack_b(&kern.shape, w, n, k), None),
            };
            layouts.push(Layout {
                kernel: kern,
                exact_up_to,
                data,
                panel_bytes: kern.shape.b_panel_bytes(k),
                remainder,
            });
            if exact_up_to == 255 {
                break;
            }
        }
        PackedB { n, k, layouts }
    }

    pub fn n(&self) -> usize {
        self.n
    }
    pub fn k(&self) -> usize {
        self.k
    }

    /// The packed layouts, in table order.
    pub fn layouts(&self) -> &[Layout] {
        &self.layouts
    }

    /// The layout to run for activations no larger than `x_max()` (asked
    /// only when the preferred kernel is not exact for every input): the
    /// first whose kernel is exact for them.
    pub fn select(&self, x_max: impl FnOnce() -> u8) -> &Layout {
        let first = &self.layouts[0];
        if first.full_range_exact() {
            return first;
        }
        let x = x_max();
        self.layouts
            .iter()
            .find(|l| l.exact_up_to >= x)
            .expect("the last layout is exact for every input")
    }

    /// The raw `[n, k]` int8 weight, read back from the last layout (a
    /// split's bounded part plus its remainder).
    pub fn unpack(&self) -> Vec<i8> {
        let l = self.layouts.last().expect("at least one layout");
        let mut w = unpack_b(&l.kernel.shape, l.data.bytes(), self.n, self.k);
        if let Some(r) = &l.remainder {
            r.add_to(&mut w, self.k);
        }
        w
    }

    /// Bytes held by the panels (remainders included).
    pub fn bytes(&self) -> usize {
        self.layouts
            .iter()
            .map(|l| {
                l.data.len()
                    + l.remainder.as_ref().map_or(0, |r| {
                        r.entries.len() * std::mem::size_of::<PairRec>()
                            + r.groups.len() * std::mem::size_of::<PairGroup>()
                    })
            })
            .sum()
    }
}

/// Weight panels `[N/nr][ku][nr][kr]` of `w` (`[n, k]`), zero-padded in N and K.
fn pack_b(s: &Shape, w: &[i8], n: usize, k: usize) -> Aligned {
    let pb = s.b_panel_bytes(k);
    let eb = s.elem.bytes();
    let mut aligned = Aligned::zeroed(n.div_ceil(s.nr) * pb);
    let data = aligned.bytes_mut();
    for (col, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        let panel = &mut data[(col / s.nr) * pb..][..pb];
        let c = col % s.nr;
        for (kk, &v) in row.iter().enumerate() {
            let (u, t) = (kk / s.kr, kk % s.kr);
            let at = ((u * s.nr + c) * s.kr + t) * eb;
            match s.elem {
                Elem::I8 => panel[at] = v as u8,
                Elem::I16 => panel[at..at + 2].copy_from_slice(&(v as i16).to_le_bytes()),
            }
        }
    }
    aligned
}

/// The inverse of [`pack_b`].
fn unpack_b(s: &Shape, data: &[u8], n: usize, k: usize) -> Vec<i8> {
    let pb = s.b_panel_bytes(k);
    let eb = s.elem.bytes();
    let mut w = vec![0i8; n * k];
    for (col, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        let panel = &data[(col / s.nr) * pb..][..pb];
        let c = col % s.nr;
        for (kk, v) in row.iter_mut().enumerate() {
            let (u, t) = (kk / s.kr, kk % s.kr);
            let at = ((u * s.nr + c) * s.kr + t) * eb;
            *v = match s.elem {
                Elem::I8 => panel[at] as i8,
                Elem::I16 => i16::from_le_bytes([panel[at], panel[at + 1]]) as i8,
            };
        }
    }
    w
}

/// One finished accumulator tile, handed to the output stage.
#[derive(Debug)]
pub struct AccTile<'a> {
    /// Raw `Σ_k enc(x)·w` (see [`Kernel::a_shift`]), row `r` at `acc[r·nr..]`.
    pub acc: &'a [i32],
    pub nr: usize,
    /// GEMM rows `m0 .. m0 + mrows` and columns `n0 .. n0 + ncols`.
    pub m0: usize,
    pub mrows: usize,
    pub n0: usize,
    pub ncols: usize,
    /// `Σ_k x` of the tile's rows (zeros unless row sums were asked for).
    pub rowsums: &'a [i32],
}

/// An output stage: turns accumulator tiles into results (zero-point
/// correction, requantization or float output) and stores them.
pub trait Stage: Sync {
    fn finish(&self, t: &AccTile<'_>);
}

/// Where output element (m, n) of a GEMM goes in the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `base + m·ld + n`: row-major (linear), or pixel-major NHWC conv output
    /// (rows are pixels, `ld` the channel count).
    Rows { base: usize, ld: usize },
    /// `base + n·ld + m`: transposed, e.g. NCHW conv output (rows are the
    /// pixels of one plane, `ld` the plane size).
    Cols { base: usize, ld: usize },
}

impl Store {
    pub fn index(&self, m: usize, n: usize) -> usize {
        match *self {
            Store::Rows { base, ld } => base + m * ld + n,
            Store::Cols { base, ld } => base + n * ld + m,
        }
    }
    /// The largest index tile `t` is stored at (for a bounds check before
    /// the stores).
    pub fn last(&self, t: &AccTile<'_>) -> usize {
        self.index(t.m0 + t.mrows - 1, t.n0 + t.ncols - 1)
    }
}

/// How an engine runs the driver's tasks on its threads.
pub trait Workers: Sync {
    /// Threads the tasks may spread over.
    fn threads(&self) -> usize;
    /// `f(scratch, i, a_i, s_i)` over the matching `ca`- and `cs`-element
    /// chunks of `a` and `s` (packing), with per-worker scratch.
    fn chunks(&self, a: &mut [u8], ca: usize, s: &mut [i32], cs: usize, f: &ChunkFn<'_>);
    /// `f(tile_buf, task)` for every task in `0..count`, with a per-worker
    /// buffer of at least `buf_len` int32.
    fn tasks(&self, count: usize, buf_len: usize, f: &TaskFn<'_>);
}

/// Body of [`Workers::chunks`].
pub type ChunkFn<'a> = dyn Fn(&mut Vec<u8>, usize, &mut [u8], &mut [i32]) + Sync + 'a;
/// Body of [`Workers::tasks`].
pub type TaskFn<'a> = dyn Fn(&mut [i32], usize) + Sync + 'a;

/// The driver's cache blocking and threading thresholds (an engine's tuning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Weight bytes of one micro-panel k-block (kept in L1 with an
    /// activation panel while it sweeps the row panels).
    pub b_block_bytes: usize,
    /// Packed activation bytes of one row block (kept in L2).
    pub a_block_bytes: usize,
    /// Accumulator bytes of one row block's tiles for one column panel
    /// (kept in L1 between the k-blocks and the output stage).
    pub acc_block_bytes: usize,
    /// Columns per task (rounded up to a multiple of `nr`).
    pub nc: usize,
    /// GEMMs with fewer multiply-accumulates run as one task.
    pub serial_macs: usize,
}

impl Blocking {
    /// Row panels per row block, for panels of `pa` packed bytes and tiles
    /// of `tile_bytes` accumulator bytes: within both budgets, then halved
    /// until `per_rowblock · (row blocks)` tasks reach `want`.
    pub fn panels_per_block(
        &self,
        pa: usize,
        tile_bytes: usize,
        mpanels: usize,
        per_rowblock: usize,
        want: usize,
    ) -> usize {
        let budget = (self.a_block_bytes / pa.max(1)).min(self.acc_block_bytes / tile_bytes.max(1));
        let mut p = budget.clamp(1, mpanels.max(1));
        while per_rowblock * mpanels.div_ceil(p) < want && p > 1 {
            p = p.div_ceil(2);
        }
        p
    }

    /// Tuned on a 2-core AVX-512 VNNI Xeon (48 KiB L1d, 2 MiB L2 per core).
    pub const DEFAULT: Blocking = Blocking {
        b_block_bytes: 24 * 1024,
        a_block_bytes: 384 * 1024,
        // Without it a K = 16 conv (128-byte panels) made 24 576-row blocks
        // whose 3 MiB of accumulators streamed through L2 to the stage.
        acc_block_bytes: 32 * 1024,
        nc: 128,
        // Below ~8M multiply-accumulates (M = 8 at 768²) waking a second
        // thread costs more than it saves.
        serial_macs: 8 << 20,
    };
}

/// One GEMM: `C[m, n] = stage(Σ_k A[m,k]·B[n,k])` for `m` activation rows
/// produced by `fill` and the weights `b`, on `layout` (one of `b`'s,
/// usually [`PackedB::select`]'s choice).
pub struct Gemm<'a, S: ?Sized> {
    pub b: &'a PackedB,
    pub layout: &'a Layout,
    pub m: usize,
    /// `fill(row, dst)` writes row `row`'s K u8 values.
    pub fill: &'a (dyn Fn(usize, &mut [u8]) + Sync),
    /// Whether the stage needs the activations' row sums (nonzero weight zero points).
    pub row_sums: bool,
    pub stage: &'a S,
}

/// Run a GEMM: pack the activations (row sums fused), then split the output
/// into tasks of (column block × row block). Within a task, for each weight
/// micro-panel, K is walked in blocks that stay in L1 while every row panel
/// of the block accumulates onto its int32 tile; each tile goes to the stage
/// once K is done. Tasks are numbered column-block major, so consecutive
/// tasks reuse the same weights.
pub fn run<S: Stage + ?Sized, W: Workers + ?Sized>(g: &Gemm<'_, S>, workers: &W, blk: &Blocking) {
    let lay = g.layout;
    let kern = lay.kernel;
    kern.calls.fetch_add(1, Ordering::Relaxed);
    let s = kern.shape;
    let (mr, nr) = (s.mr, s.nr);
    let (m, n, k) = (g.m, g.b.n, g.b.k);
    let ku = s.units(k);
    let unit = s.unit_bytes();
    let lda = ku * unit;
    // A two-pass kernel's panels carry its second operand after the rows.
    let pass = match (kern.pair, lay.remainder()) {
        (Some(p), Some(r)) if r.pairs() > 0 => Some((p, r)),
        _ => None,
    };
    let pa_main = s.a_panel_bytes(k);
    let pa = pa_main + pass.map_or(0, |(p, _)| (p.a_bytes)(k));
    let a_step = s.a_unit_stride();
    let mpanels = m.div_ceil(mr);
    // A reused per-thread buffer: a fresh multi-MB allocation per call costs
    // page faults whenever the allocator returns it to the OS.
    let mut abuf = take_buffer(mpanels * pa);
    let mut sums = vec![0i32; mpanels * mr];
    workers.chunks(&mut abuf, pa, &mut sums, mr, &|scratch, p, panel, rs| {
        let row0 = p * mr;
        let nrows = mr.min(m - row0);
        let (main, second) = panel.split_at_mut(pa_main);
        (kern.pack_a)(&mut APanel {
            k,
            row0,
            nrows,
            fill: g.fill,
            dst: main,
            sums: rs,
            need_sums: g.row_sums,
            scratch,
        });
        if let Some((pp, _)) = pass {
            (pp.pack_a)(PairA {
                rows: main,
                lda,
                nrows,
                k,
                dst: second,
            });
        }
    });

    let kub = (blk.b_block_bytes / (nr * unit)).max(1);
    let small = m.saturating_mul(k).saturating_mul(n) < blk.serial_macs;
    let nc = if small { n } else { blk.nc }.div_ceil(nr) * nr;
    let nblocks = n.div_ceil(nc);
    // Enough tasks to balance the threads: at least four per thread (with
    // one or two per thread, 3 tasks on 2 threads capped the speed-up at 1.5).
    let threads = workers.threads();
    let want = if threads > 1 && !small {
        4 * threads
    } else {
        1
    };
    let panels_per_block = blk.panels_per_block(pa, mr * nr * 4, mpanels, nblocks, want);
    let mc = panels_per_block * mr;
    let mblocks = m.div_ceil(mc);
    let (a, sums) = (&abuf[..], &sums[..]);
    let tile = mr * nr;
    // The tiles start on a cache line (16 int32 of slack): the kernels'
    // 64-byte accumulator loads and stores then never straddle two lines.
    workers.tasks(mblocks * nblocks, mc * nr + 15, &|buf, task| {
        let off = buf.as_ptr().align_offset(64).min(15);
        let cbuf = &mut buf[off..off + mc * nr];
        let (nb, mb) = (task / mblocks, task % mblocks);
        let (m_lo, m_hi) = (mb * mc, (mb * mc + mc).min(m));
        let (n_lo, n_hi) = (nb * nc, (nb * nc + nc).min(n));
        for n0 in (n_lo..n_hi).step_by(nr) {
            let bp = lay.panel(n0 / nr);
            for kb in (0..ku).step_by(kub) {
                let kn = kub.min(ku - kb);
                for (i, m0) in (m_lo..m_hi).step_by(mr).enumerate() {
                    let p = m0 / mr;
                    (kern.run)(Micro {
                        a: &a[p * pa + kb * a_step..p * pa + pa_main],
                        lda,
                        b: &bp[kb * nr * unit..],
                        c: &mut cbuf[i * tile..(i + 1) * tile],
                        ku: kn,
                        mrows: mr.min(m_hi - m0),
                        init: kb == 0,
                    });
                }
            }
            if let Some((pp, rem)) = pass {
                let panel = rem.panel(n0 / nr);
                if !panel.is_empty() {
                    let (p0, np) = (m_lo / mr, (m_hi - m_lo).div_ceil(mr));
                    (pp.run)(PairMicro {
                        a: &a[p0 * pa..(p0 + np) * pa],
                        pa,
                        a_off: pa_main,
                        panels: np,
                        last_rows: m_hi - m_lo - (np - 1) * mr,
                        rem: panel,
                        c: &mut cbuf[..np * tile],
                    });
                }
            }
            for (i, m0) in (m_lo..m_hi).step_by(mr).enumerate() {
                let mrows = mr.min(m_hi - m0);
                g.stage.finish(&AccTile {
                    acc: &cbuf[i * tile..(i + 1) * tile],
                    nr,
                    m0,
                    mrows,
                    n0,
                    ncols: nr.min(n_hi - n0),
                    rowsums: &sums[m0..m0 + mrows],
                });
            }
        }
    });
    give_back(abuf);
}

thread_local! {
    /// The packed-activation buffer of the last GEMM on this thread.
    static A_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer(len: usize) -> Vec<u8> {
    let mut v = A_BUF.with(|c| std::mem::take(&mut *c.borrow_mut()));
    v.resize(len, 0);
    v
}

fn give_back(v: Vec<u8>) {
    A_BUF.with(|c| *c.borrow_mut() = v);
}

/// [`Workers`] on the calling thread alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serial;

impl Workers for Serial {
    fn threads(&self) -> usize {
        1
    }
    fn chunks(&self, a: &mut [u8], ca: usize, s: &mut [i32], cs: usize, f: &ChunkFn<'_>) {
        let mut scratch = Vec::new();
        for (i, (x, y)) in a.chunks_mut(ca).zip(s.chunks_mut(cs)).enumerate() {
            f(&mut scratch, i, x, y);
        }
    }
    fn tasks(&self, count: usize, buf_len: usize, f: &TaskFn<'_>) {
        let mut buf = vec![0i32; buf_len];
        for i in 0..count {
            f(&mut buf, i);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The driver with a plain-Rust kernel of each layout against a naive
    //! loop: blocking, tails, row sums and the kernel choice.
    use super::*;
    use std::sync::Mutex;

    fn pack_rows(p: &mut APanel<'_>) {
        let lda = p.dst.len() / 4;
        for r in 0..p.nrows {
            let row = &mut p.dst[r * lda..(r + 1) * lda];
            (p.fill)(p.row0 + r, &mut row[..p.k]);
            p.sums[r] = row[..p.k].iter().map(|&v| v as i32).sum();
            row[p.k..].fill(0);
        }
    }

    fn pack_interleaved(p: &mut APanel<'_>) {
        p.dst.fill(0);
        let mut row = vec![0u8; p.k];
        for r in 0..p.nrows {
            (p.fill)(p.row0 + r, &mut row);
            p.sums[r] = row.iter().map(|&v| v as i32).sum();
            for (kk, &v) in row.iter().enumerate() {
                let (u, t) = (kk / 2, kk % 2);
                p.dst[(u * 3 + r) * 2 + t] = v ^ 0x80;
            }
        }
    }

    const ROWS: Shape = Shape {
        mr: 4,
        nr: 8,
        kr: 4,
        elem: Elem::I8,
        a: ALayout::Rows,
    };
    const INTER: Shape = Shape {
        mr: 3,
        nr: 2,
        kr: 2,
        elem: Elem::I8,
        a: ALayout::Interleaved,
    };

    fn naive(s: &Shape, t: Micro<'_>, shifted: bool) {
        t.assert_fits(s);
        let unit = s.unit_bytes();
        for r in 0..t.mrows {
            for j in 0..s.nr {
                let mut acc = if t.init { 0i32 } else { t.c[r * s.nr + j] };
                for u in 0..t.ku {
                    for q in 0..s.kr {
                        let x = match s.a {
                            ALayout::Rows => t.a[r * t.lda + u * unit + q] as i32,
                            ALayout::Interleaved => t.a[(u * s.mr + r) * unit + q] as i32,
                        };
                        // Shifted layouts store x − 128 as s8.
                        let x = if shifted { x as u8 as i8 as i32 } else { x };
                        let w = t.b[(u * s.nr + j) * unit + q] as i8 as i32;
                        acc = acc.wrapping_add(x * w);
                    }
                }
                t.c[r * s.nr + j] = acc;
            }
        }
    }

    fn run_rows(t: Micro<'_>) {
        naive(&ROWS, t, false)
    }
    fn run_inter(t: Micro<'_>) {
        naive(&INTER, t, true)
    }
    /// Exact only up to 100 (pretend), to test the choice.
    fn picky(_: &[i8], _: usize, _: usize) -> u8 {
        100
    }

    static ROWS_K: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "test_rows",
        shape: ROWS,
        a_shift: 0,
        features: "",
        pack_a: pack_rows,
        exact: always_exact,
        run: run_rows,
        peak: None,
    })];
    static PAIR: [Kernel; 2] = [
        Kernel::new(KernelSpec {
            name: "test_inter",
            shape: INTER,
            a_shift: 128,
            features: "",
            pack_a: pack_interleaved,
            exact: picky,
            run: run_inter,
            peak: None,
        }),
        Kernel::new(KernelSpec {
            name: "test_rows2",
            shape: ROWS,
            a_shift: 0,
            features: "",
            pack_a: pack_rows,
            exact: always_exact,
            run: run_rows,
            peak: None,
        }),
    ];

    /// Records corrected accumulators `acc + a_shift·Σw` into a matrix.
    struct Collect<'a> {
        shift_terms: &'a [i32],
        out: Mutex<Vec<i32>>,
        store: Store,
    }
    impl Stage for Collect<'_> {
        fn finish(&self, t: &AccTile<'_>) {
            let mut o = self.out.lock().unwrap();
            assert!(self.store.last(t) < o.len());
            for r in 0..t.mrows {
                for j in 0..t.ncols {
                    let v = t.acc[r * t.nr + j].wrapping_add(self.shift_terms[t.n0 + j]);
                    let i = self.store.index(t.m0 + r, t.n0 + j);
                    assert_eq!(o[i], i32::MIN, "element written twice");
                    o[i] = v;
                }
            }
        }
    }

    #[test]
    fn driver_matches_naive_for_every_layout_split_and_choice() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let blocks = [
            Blocking::DEFAULT,
            // Tiny blocks: several k-blocks, row blocks and tasks.
            Blocking {
                b_block_bytes: 64,
                a_block_bytes: 64,
                acc_block_bytes: 64,
                nc: 8,
                serial_macs: 0,
            },
        ];
        for &(m, n, k) in &[(1, 1, 1), (5, 9, 7), (13, 17, 33), (9, 30, 70)] {
            let x: Vec<u8> = (0..m * k).map(|_| rnd() as u8).collect();
            let w: Vec<i8> = (0..n * k).map(|_| rnd() as i8).collect();
            let want: Vec<i32> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k).fold(0i32, |s, kk| {
                        s.wrapping_add(x[r * k + kk] as i32 * w[c * k + kk] as i32)
                    })
                })
                .collect();
            let sums: Vec<i32> = (0..n)
                .map(|c| w[c * k..(c + 1) * k].iter().map(|&v| v as i32).sum())
                .collect();
            for table in [Table::new(&ROWS_K), Table::new(&PAIR)] {
                let b = PackedB::new(table, &w, n, k);
                assert_eq!(b.unpack(), w);
                for (x_max, want_kernel) in [(255u8, "test_rows"), (100, "test_inter")] {
                    let lay = b.select(|| x_max);
                    if table.kernels().len() == 1 {
                        assert_eq!(lay.kernel.name, "test_rows");
                    } else if x_max == 255 {
                        assert_eq!(lay.kernel.name, "test_rows2");
                    } else {
                        assert_eq!(lay.kernel.name, want_kernel);
                    }
                    let shift: Vec<i32> = sums
                        .iter()
                        .map(|&s| s.wrapping_mul(lay.kernel.a_shift))
                        .collect();
                    for blk in &blocks {
                        for store in [
                            Store::Rows { base: 0, ld: n },
                            Store::Cols { base: 0, ld: m },
                        ] {
                            let st = Collect {
                                shift_terms: &shift,
                                out: Mutex::new(vec![i32::MIN; m * n]),
                                store,
                            };
                            let fill = |r: usize, d: &mut [u8]| d.copy_from_slice(&x[r * k..][..k]);
                            run(
                                &Gemm {
                                    b: &b,
                                    layout: lay,
                                    m,
                                    fill: &fill,
                                    row_sums: true,
                                    stage: &st,
                                },
                                &Serial,
                                blk,
                            );
                            let got = st.out.into_inner().unwrap();
                            for r in 0..m {
                                for c in 0..n {
                                    assert_eq!(
                                        got[store.index(r, c)],
                                        want[r * n + c],
                                        "{lay:?} {m}x{n}x{k} {blk:?} {store:?} at ({r},{c})"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(PAIR[0].calls() > 0 && PAIR[1].calls() > 0 && ROWS_K[0].calls() > 0);
    }

    // A two-pass kernel in plain Rust: weights clamped to ±50 in the first
    // pass, the excess as pair corrections (a new group every third entry
    // of a column), the second operand `[q][mr][2]` bytes per panel.
    const CLAMP: i8 = 50;

    fn split_clamp(w: &[i8], n: usize, k: usize) -> Split {
        let mut bounded = w.to_vec();
        let mut entries = Vec::new();
        for c in 0..n {
            let mut in_col = 0;
            for q in 0..k.div_ceil(2) {
                let mut r = [0i8; 2];
                for t in 0..2 {
                    if 2 * q + t < k {
                        let v = &mut bounded[c * k + 2 * q + t];
                        let b = (*v).clamp(-CLAMP, CLAMP);
                        r[t] = *v - b;
                        *v = b;
                    }
                }
                if r != [0, 0] {
                    entries.push(PairEntry {
                        col: c as u32,
                        q: q as u32,
                        r,
                        new_group: in_col % 3 == 0,
                    });
                    in_col += 1;
                }
            }
        }
        let worth = 4 * entries.len() < n * k;
        Split {
            bounded,
            entries,
            worth,
        }
    }
    fn pair_a_bytes(k: usize) -> usize {
        k.div_ceil(2) * ROWS.mr * 2
    }
    fn pair_pack(p: PairA<'_>) {
        p.dst.fill(0);
        for r in 0..p.nrows {
            for kk in 0..p.k {
                p.dst[(kk / 2 * ROWS.mr + r) * 2 + kk % 2] = p.rows[r * p.lda + kk];
            }
        }
    }
    fn pair_run(t: PairMicro<'_>) {
        let (mr, nr) = (ROWS.mr, ROWS.nr);
        for p in 0..t.panels {
            let rows = if p + 1 == t.panels { t.last_rows } else { mr };
            let a2 = &t.a[p * t.pa + t.a_off..(p + 1) * t.pa];
            for g in t.rem.groups() {
                for e in &t.rem.entries()[g.start as usize..g.end as usize] {
                    for r in 0..rows {
                        let x = &a2[(e.q as usize * mr + r) * 2..];
                        let v = x[0] as i32 * e.r[0] as i32 + x[1] as i32 * e.r[1] as i32;
                        let c = &mut t.c[p * mr * nr + r * nr + g.col as usize];
                        *c = c.wrapping_add(v);
                    }
                }
            }
        }
    }
    static CLAMP_PASS: PairPass = PairPass {
        name: "test_pairs",
        split: split_clamp,
        a_bytes: pair_a_bytes,
        pack_a: pair_pack,
        run: pair_run,
    };
    fn clamp_run(t: Micro<'_>) {
        // The first pass must only ever see the bounded weights.
        assert!(t.b[..t.ku * 4 * ROWS.nr]
            .iter()
            .all(|&v| (v as i8).abs() <= CLAMP));
        naive(&ROWS, t, false)
    }
    static TWO: [Kernel; 2] = [
        Kernel::two_pass(
            KernelSpec {
                name: "test_two_pass",
                shape: ROWS,
                a_shift: 0,
                features: "",
                pack_a: pack_rows,
                exact: always_exact,
                run: clamp_run,
                peak: None,
            },
            &CLAMP_PASS,
        ),
        Kernel::new(KernelSpec {
            name: "test_rows3",
            shape: ROWS,
            a_shift: 0,
            features: "",
            pack_a: pack_rows,
            exact: always_exact,
            run: run_rows,
            peak: None,
        }),
    ];

    #[test]
    fn two_pass_kernel_matches_naive_and_records_its_split() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let tiny = Blocking {
            b_block_bytes: 64,
            a_block_bytes: 64,
            acc_block_bytes: 64,
            nc: 8,
            serial_macs: 0,
        };
        // (m, n, k, weight magnitude, every split accepted)
        for &(m, n, k, mag, every) in &[
            (1, 1, 1, 127, false),
            (5, 9, 7, 60, false),
            (13, 17, 33, 55, false),
            (9, 30, 71, 40, false),
            (9, 30, 71, 127, false),
            (9, 30, 71, 127, true),
            (4, 8, 16, 127, true),
        ] {
            let x: Vec<u8> = (0..m * k).map(|_| rnd() as u8).collect();
            let w: Vec<i8> = (0..n * k)
                .map(|_| ((rnd() % (2 * mag + 1)) as i32 - mag as i32) as i8)
                .collect();
            let want: Vec<i32> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k).fold(0i32, |s, kk| {
                        s.wrapping_add(x[r * k + kk] as i32 * w[c * k + kk] as i32)
                    })
                })
                .collect();
            let b = if every {
                with_every_split(|| PackedB::new(Table::new(&TWO), &w, n, k))
            } else {
                PackedB::new(Table::new(&TWO), &w, n, k)
            };
            assert_eq!(b.unpack(), w, "{m}x{n}x{k}");
            let split = split_clamp(&w, n, k);
            let lay = b.select(|| 255);
            if split.worth || every {
                assert_eq!(lay.kernel.name, "test_two_pass");
                let rem = lay.remainder().expect("recorded");
                assert_eq!(rem.pairs(), split.entries.len());
                assert_eq!(b.layouts().len(), 1, "nothing packed after it");
            } else {
                assert_eq!(lay.kernel.name, "test_rows3", "declined");
                assert!(lay.remainder().is_none());
            }
            for blk in [Blocking::DEFAULT, tiny] {
                let st = Collect {
                    shift_terms: &vec![0; n],
                    out: Mutex::new(vec![i32::MIN; m * n]),
                    store: Store::Rows { base: 0, ld: n },
                };
                let fill = |r: usize, d: &mut [u8]| d.copy_from_slice(&x[r * k..][..k]);
                run(
                    &Gemm {
                        b: &b,
                        layout: lay,
                        m,
                        fill: &fill,
                        row_sums: false,
                        stage: &st,
                    },
                    &Serial,
                    &blk,
                );
                assert_eq!(
                    st.out.into_inner().unwrap(),
                    want,
                    "{lay:?} {m}x{n}x{k} {blk:?}"
                );
            }
        }
        assert!(TWO[0].calls() > 0 && TWO[1].calls() > 0);
        // Groups: a new one every third entry of a column.
        let w = vec![100i8; 2 * 16];
        let b = with_every_split(|| PackedB::new(Table::new(&TWO), &w, 2, 16));
        let rem = b.layouts()[0].remainder().unwrap();
        assert_eq!((rem.pairs(), rem.extra_groups()), (16, 4));
        assert_eq!(rem.density(), 1.0);
        let p = rem.panel(0);
        assert_eq!(p.groups().len(), 6);
        assert_eq!(p.q_end(), 8);
        assert_eq!(
            p.groups()[3],
            PairGroup {
                col: 1,
                first: 1,
                start: 8,
                end: 11
            }
        );
        assert_eq!(p.entries()[0].r, [50, 50, 50, 50]);
    }

    #[test]
    #[should_panic(expected = "exact for every input")]
    fn last_kernel_must_be_exact_for_every_input() {
        static BAD: [Kernel; 1] = [Kernel::new(KernelSpec {
            name: "bad",
            shape: ROWS,
            a_shift: 0,
            features: "",
            pack_a: pack_rows,
            exact: picky,
            run: run_rows,
            peak: None,
        })];
        PackedB::new(Table::new(&BAD), &[1, 2], 1, 2);
    }

    #[test]
    #[should_panic(expected = "weight panel too short")]
    fn micro_bounds_are_checked() {
        let (a, b, mut c) = (vec![0u8; 16], vec![0u8; 8], vec![0i32; 32]);
        Micro {
            a: &a,
            lda: 4,
            b: &b,
            c: &mut c,
            ku: 1,
            mrows: 4,
            init: true,
        }
        .assert_fits(&ROWS);
    }
}
