//! Random forests in the flat form the tree layouts compile from, and a plain walk of them: what
//! the layouts' tests (perfect trees, QuickScorer) check their answers against.

use crate::quickscorer::Forest;

/// A child index with this bit set is a leaf.
pub const LEAF: u32 = 1 << 31;

/// xorshift64: reproducible cases without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `rows` rows of `width` values: on, around and between the thresholds [`Flat::grow`] draws,
    /// and NaN one time in six.
    pub fn rows(&mut self, rows: usize, width: usize) -> Vec<f32> {
        (0..rows * width)
            .map(|_| match self.below(6) {
                0 => f32::NAN,
                1 => self.below(5) as f32 - 2.0,
                _ => self.below(1000) as f32 / 150.0 - 3.3,
            })
            .collect()
    }
}

/// A forest in the flat form [`Forest`] borrows.
#[derive(Default)]
pub struct Flat {
    pub features: Vec<u32>,
    pub thresholds: Vec<f32>,
    pub yes: Vec<u32>,
    pub no: Vec<u32>,
    pub missing_yes: Vec<bool>,
    pub roots: Vec<u32>,
    pub leaves: u32,
}

impl Flat {
    /// A random subtree at most `depth` deep; returns its id (`LEAF`-tagged for a leaf).
    pub fn grow(&mut self, rng: &mut Rng, depth: u32, width: usize) -> u32 {
        if depth == 0 || rng.below(4) == 0 {
            self.leaves += 1;
            return (self.leaves - 1) | LEAF;
        }
        let id = self.features.len();
        self.features.push(rng.below(width) as u32);
        // Few distinct thresholds, so that rows tie with them.
        self.thresholds.push(rng.below(5) as f32 - 2.0);
        self.missing_yes.push(rng.below(2) == 0);
        self.yes.push(0);
        self.no.push(0);
        let yes = self.grow(rng, depth - 1, width);
        let no = self.grow(rng, depth - 1, width);
        (self.yes[id], self.no[id]) = (yes, no);
        id as u32
    }

    pub fn forest(&self, width: usize, strict: bool) -> Forest<'_> {
        Forest {
            features: &self.features,
            thresholds: &self.thresholds,
            yes: &self.yes,
            no: &self.no,
            missing_yes: &self.missing_yes,
            roots: &self.roots,
            leaf_flag: LEAF,
            width,
            strict,
        }
    }

    pub fn leaf(&self, mut at: u32, row: &[f32], strict: bool) -> usize {
        while at & LEAF == 0 {
            let i = at as usize;
            let v = row[self.features[i] as usize];
            let t = self.thresholds[i];
            let pass = if strict { v < t } else { v <= t };
            at = if pass || (self.missing_yes[i] && v.is_nan()) { self.yes[i] } else { self.no[i] };
        }
        (at & !LEAF) as usize
    }

    /// Each row's leaf in each tree, by a plain walk: what the layouts must reach.
    pub fn leaves(&self, x: &[f32], width: usize, strict: bool) -> Vec<Vec<usize>> {
        x.chunks_exact(width).map(|row| self.roots.iter().map(|&root| self.leaf(root, row, strict)).collect()).collect()
    }
}
