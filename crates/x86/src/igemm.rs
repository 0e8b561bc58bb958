//! The operands of an indirect GEMM microkernel (conv on NHWC activations
//! without im2col): instead of one packed activation panel, each tile row
//! reads its K bytes as a list of segments, each segment a run of whole
//! k-units somewhere in the input (a kernel row of `kw·C` contiguous NHWC
//! bytes, one tap's `C` bytes, or the zero-point row that stands for
//! padding). The weight panel is the GEMM's (`[ku][nr][kr]`), walked in
//! the segments' order.
//!
//! The segments of a tile are checked once when they are built
//! ([`SegList::push`]): every row's run lies inside the input or the
//! zero-point row. A kernel then only needs the weight panel and tile
//! bounds ([`IMicro::assert_fits`]).

use rquant_core::gemm::Shape;

/// Rows of the largest x86 tile.
pub const MR_MAX: usize = 8;

/// One segment of a tile: `units` k-units per row, row `r` starting at
/// byte `off[r]` of the sources (offsets past the input's length address
/// the zero-point row: `off − a.len()`). All [`MR_MAX`] rows are valid
/// runs (rows past a tile's last one repeat a used row), so a kernel may
/// read any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub units: usize,
    pub off: [usize; MR_MAX],
}

/// The segments of tiles, checked against the sources they address.
#[derive(Debug)]
pub struct SegList<'a> {
    a: &'a [u8],
    z: &'a [u8],
    unit: usize,
    segs: Vec<Seg>,
}

impl<'a> SegList<'a> {
    /// An empty list over input `a` and zero-point row `z`, k-units of
    /// `unit` bytes; `segs` is a reused buffer (cleared).
    pub fn new(a: &'a [u8], z: &'a [u8], unit: usize, mut segs: Vec<Seg>) -> Self {
        segs.clear();
        SegList { a, z, unit, segs }
    }
    /// The buffer back, for reuse.
    pub fn into_buffer(self) -> Vec<Seg> {
        self.segs
    }
    pub fn len(&self) -> usize {
        self.segs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }
    /// Append a segment. Panics unless each of its [`MR_MAX`] rows lies
    /// inside `a` or inside `z`.
    pub fn push(&mut self, s: Seg) {
        let len = s.units * self.unit;
        let alen = self.a.len();
        for &o in &s.off {
            let ok = if o < alen {
                o + len <= alen
            } else {
                o - alen + len <= self.z.len()
            };
            assert!(
                ok,
                "segment row at {o} (+{len}) outside the input and the zero row"
            );
        }
        self.segs.push(s);
    }
    /// Segments `range` as kernel operands.
    pub fn view(&self, range: std::ops::Range<usize>) -> Segs<'_> {
        Segs {
            a: self.a,
            z: self.z,
            segs: &self.segs[range],
        }
    }
}

/// A checked run of segments (from [`SegList::view`]).
#[derive(Debug, Clone, Copy)]
pub struct Segs<'a> {
    pub a: &'a [u8],
    pub z: &'a [u8],
    pub segs: &'a [Seg],
}

impl Segs<'_> {
    /// k-units covered.
    pub fn units(&self) -> usize {
        self.segs.iter().map(|s| s.units).sum()
    }
    /// The address of row `r` of segment `s`.
    #[inline(always)]
    pub fn ptr(&self, s: &Seg, r: usize) -> *const u8 {
        let o = s.off[r];
        let alen = self.a.len();
        // wrapping_add: pointer arithmetic that is never dereferenced out of
        // bounds (SegList::push checked each run).
        if o < alen {
            self.a.as_ptr().wrapping_add(o)
        } else {
            self.z.as_ptr().wrapping_add(o - alen)
        }
    }
}

/// The operands of one indirect microkernel call:
/// `c[r][j] (+)= Σ_segments Σ_u Σ_t a_r[u][t]·b[u][j][t]`, in wrapping int32.
#[derive(Debug)]
pub struct IMicro<'a> {
    /// Checked segments.
    pub segs: Segs<'a>,
    /// The weight panel from the call's first k-unit on.
    pub b: &'a [u8],
    /// The `mr × nr` accumulator tile, row stride `nr`.
    pub c: &'a mut [i32],
    /// Rows of the tile that matter (`1..=mr`).
    pub mrows: usize,
    /// Start from zero; else add onto the tile already in `c`.
    pub init: bool,
}

impl IMicro<'_> {
    /// Panics unless the weight panel and the tile hold what a kernel of
    /// shape `s` reads and writes (the segments were checked when pushed).
    #[inline]
    pub fn assert_fits(&self, s: &Shape) {
        assert!(
            self.mrows >= 1 && self.mrows <= s.mr && s.mr <= MR_MAX,
            "mrows {}",
            self.mrows
        );
        assert!(
            self.b.len() >= self.segs.units() * s.unit_bytes() * s.nr,
            "weight panel too short"
        );
        assert!(self.c.len() >= s.mr * s.nr, "tile too short");
    }
}
