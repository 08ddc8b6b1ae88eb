//! Shallow forests laid out as perfect binary trees: every tree is padded to the forest's depth
//! (a leaf above it becomes a node whose two subtrees are copies of that leaf), so a node's
//! children are implicit (`2i + 1` for `yes`, `2i + 2` for `no`), every walk takes exactly `depth`
//! steps with no data-dependent exit, and a step is a load, a comparison and an add. Blocks of rows
//! walk one tree together so that their steps overlap. Only for forests of depth at most
//! [`MAX_DEPTH`] whose nodes all test `x <= t` (or all `x < t`): padding grows a tree to `2^depth`
//! leaves, so deeper forests keep QuickScorer or the lockstep walk.

use super::quickscorer::Forest;

/// The deepest forest laid out this way (64 leaves per tree, 756 bytes of nodes and leaves).
pub(crate) const MAX_DEPTH: u32 = 6;

/// Rows walked together through one tree.
const BLOCK: usize = 8;

/// Set in a node's feature: a missing (NaN) value takes the `yes` branch.
const NAN_YES: u32 = 1 << 31;

/// A forest of padded trees.
#[derive(Debug)]
pub(crate) struct Perfect {
    depth: u32,
    /// Per tree, its `2^depth - 1` inner nodes in level order: (feature, `NAN_YES`-tagged; threshold).
    nodes: Vec<(u32, f32)>,
    /// Per tree, the global leaf index of each of its `2^depth` leaf slots, left to right.
    leaves: Vec<u32>,
    /// For a forest whose every leaf adds one value to one score: that value per leaf slot.
    slot_values: Option<Vec<f32>>,
    trees: usize,
    /// Tests are `x < t` (else `x <= t`).
    strict: bool,
    /// Some node sends a missing value to `yes` (else the walk skips the check).
    nan_yes: bool,
}

impl Perfect {
    /// The layout, or `None` when some tree is deeper than [`MAX_DEPTH`].
    pub fn new(f: &Forest<'_>) -> Option<Perfect> {
        let depth = f.roots.iter().map(|&r| depth_of(f, r)).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return None;
        }
        let inner = (1usize << depth) - 1;
        let mut nodes = vec![(0u32, 0f32); f.roots.len() * inner];
        let mut leaves = vec![0u32; f.roots.len() * (inner + 1)];
        for (tree, &root) in f.roots.iter().enumerate() {
            let mut layout = Layout {
                f,
                depth,
                nodes: &mut nodes[tree * inner..(tree + 1) * inner],
                leaves: &mut leaves[tree * (inner + 1)..(tree + 1) * (inner + 1)],
            };
            layout.place(root, 0, 0);
        }
        let nan_yes = nodes.iter().any(|(feature, _)| feature & NAN_YES != 0);
        Some(Perfect { depth, nodes, leaves, slot_values: None, trees: f.roots.len(), strict: f.strict, nan_yes })
    }

    /// Keeps each leaf's one value (by global leaf) in its slots, for [`Perfect::sum`].
    pub fn with_leaf_values(mut self, values: &[f32]) -> Perfect {
        self.slot_values = Some(self.leaves.iter().map(|&l| values[l as usize]).collect());
        self
    }

    /// With leaf values: adds each row's sum over the trees, in tree order, to
    /// `out[row * stride + target]`. False (nothing done) without them.
    pub fn sum(&self, x: &[f32], width: usize, rows: usize, out: &mut [f32], stride: usize, target: usize) -> bool {
        let Some(values) = &self.slot_values else { return false };
        let slots = 1usize << self.depth;
        let whole = rows / BLOCK * BLOCK;
        for r0 in (0..whole).step_by(BLOCK) {
            let mut acc = [0f32; BLOCK];
            self.dispatch::<BLOCK>(x, width, r0, &mut |tree, at| {
                for (a, &slot) in acc.iter_mut().zip(at) {
                    *a += values[tree * slots + slot];
                }
            });
            for (k, a) in acc.iter().enumerate() {
                out[(r0 + k) * stride + target] += a;
            }
        }
        for r in whole..rows {
            let mut acc = 0f32;
            self.dispatch::<1>(x, width, r, &mut |tree, at| acc += values[tree * slots + at[0]]);
            out[r * stride + target] += acc;
        }
        true
    }

    /// Each row's leaf in each tree, handed to `leaf(row, global leaf)` tree by tree in order.
    pub fn run(&self, x: &[f32], width: usize, rows: usize, mut leaf: impl FnMut(usize, usize)) {
        let slots = 1usize << self.depth;
        let whole = rows / BLOCK * BLOCK;
        for r0 in (0..whole).step_by(BLOCK) {
            self.dispatch::<BLOCK>(x, width, r0, &mut |tree, at| {
                for (k, &slot) in at.iter().enumerate() {
                    leaf(r0 + k, self.leaves[tree * slots + slot] as usize);
                }
            });
        }
        // The rest one by one: a lone row walks alone, not beside seven copies of itself.
        for r in whole..rows {
            self.dispatch::<1>(x, width, r, &mut |tree, at| leaf(r, self.leaves[tree * slots + at[0]] as usize));
        }
    }

    /// [`Perfect::walk`] with `STRICT` and `NAN` (whether some node sends a missing value to
    /// `yes`) fixed at compile time.
    #[inline(always)]
    fn dispatch<const B: usize>(&self, x: &[f32], width: usize, r0: usize, sink: &mut impl FnMut(usize, &[usize; B])) {
        match (self.strict, self.nan_yes) {
            (true, true) => self.walk::<true, true, B>(x, width, r0, sink),
            (true, false) => self.walk::<true, false, B>(x, width, r0, sink),
            (false, true) => self.walk::<false, true, B>(x, width, r0, sink),
            (false, false) => self.walk::<false, false, B>(x, width, r0, sink),
        }
    }

    /// Rows `r0..r0 + B` through every tree, `B` walks side by side: `sink(tree, leaf slots)`.
    #[inline(always)]
    fn walk<const STRICT: bool, const NAN: bool, const B: usize>(
        &self,
        x: &[f32],
        width: usize,
        r0: usize,
        sink: &mut impl FnMut(usize, &[usize; B]),
    ) {
        let inner = (1usize << self.depth) - 1;
        let bases: [usize; B] = std::array::from_fn(|k| (r0 + k) * width);
        for tree in 0..self.trees {
            let nodes = &self.nodes[tree * inner..(tree + 1) * inner];
            let mut at = [0usize; B];
            for _ in 0..self.depth {
                for k in 0..B {
                    let (feature, threshold) = nodes[at[k]];
                    // The feature is below the width (checked at compile): one bound check on `x`.
                    let f = if NAN { feature & !NAN_YES } else { feature };
                    let v = x[bases[k] + f as usize];
                    let pass = if STRICT { v < threshold } else { v <= threshold };
                    let yes = pass | (NAN && (feature & NAN_YES != 0) & v.is_nan());
                    at[k] = 2 * at[k] + 2 - usize::from(yes);
                }
            }
            for a in &mut at {
                *a -= inner;
            }
            sink(tree, &at);
        }
    }
}

/// The number of tests on the longest path from `at` to a leaf.
fn depth_of(f: &Forest<'_>, at: u32) -> u32 {
    if at & f.leaf_flag != 0 {
        return 0;
    }
    1 + depth_of(f, f.yes[at as usize]).max(depth_of(f, f.no[at as usize]))
}

/// One tree being written into its padded slots.
struct Layout<'f, 'a> {
    f: &'a Forest<'f>,
    depth: u32,
    nodes: &'a mut [(u32, f32)],
    leaves: &'a mut [u32],
}

impl Layout<'_, '_> {
    /// Writes the subtree at `at` into slot `slot` of level `level`.
    fn place(&mut self, at: u32, slot: usize, level: u32) {
        let inner = self.nodes.len();
        if level == self.depth {
            // Only a leaf reaches the last level: the depth is the forest's deepest path.
            self.leaves[slot - inner] = at & !self.f.leaf_flag;
            return;
        }
        if at & self.f.leaf_flag != 0 {
            // A leaf above the last level: a test that leads to it either way (feature 0 is read
            // but does not matter).
            self.nodes[slot] = (0, 0.0);
            self.place(at, 2 * slot + 1, level + 1);
            self.place(at, 2 * slot + 2, level + 1);
            return;
        }
        let node = at as usize;
        let nan = if self.f.missing_yes.get(node).copied().unwrap_or(false) { NAN_YES } else { 0 };
        self.nodes[slot] = (self.f.features[node] | nan, self.f.thresholds[node]);
        self.place(self.f.yes[node], 2 * slot + 1, level + 1);
        self.place(self.f.no[node], 2 * slot + 2, level + 1);
    }
}
