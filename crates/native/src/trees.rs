//! Tree ensembles (ai.onnx.ml `TreeEnsembleClassifier` / `TreeEnsembleRegressor`, as skl2onnx and
//! onnxmltools write them for sklearn forests and boosting, LightGBM and XGBoost) compiled into flat
//! node arrays. A batch is evaluated tree by tree (each tree stays in cache while every row walks
//! it); scores are finished as ONNX Runtime's tree aggregators finish them (base values, the binary
//! case's second class, post-transforms), which the probe at load then confirms.

use std::collections::HashMap;

use super::attributes::{attr_floats, attr_i, attr_ints, attr_s, attr_strings, known_attributes};
use super::ml::{post_transform_row, PostTransform};
use super::perfect::Perfect;
use super::quickscorer::{Forest, QuickScorer};
use quorum_onnx::proto::NodeProto;

/// A child index with this bit set is a leaf (the rest is the leaf's index).
const LEAF: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Node {
    feature: u32,
    threshold: f32,
    /// Child when the comparison holds (or the value is missing and tracks true); `LEAF`-tagged.
    yes: u32,
    no: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// A compiled ensemble.
#[derive(Debug)]
pub(crate) struct TreeEnsemble {
    nodes: Vec<Node>,
    /// Every node's mode when they differ; `None`: all are `mode`.
    modes: Option<Vec<Mode>>,
    mode: Mode,
    /// Per node: a missing (NaN) value takes the `yes` branch. Empty when no node says so.
    missing_true: Vec<bool>,
    /// Each tree's root (`LEAF`-tagged when the tree is a single leaf).
    roots: Vec<u32>,
    /// Leaf `l`'s weights: `leaf_weights[leaf_start[l]..leaf_start[l + 1]]`, as (target, weight).
    leaf_start: Vec<u32>,
    leaf_weights: Vec<(u32, f32)>,
    /// Every leaf has exactly one weight, all for target `single.0`: the weights by leaf.
    single: Option<(u32, Vec<f32>)>,
    targets: usize,
    /// Whether some tree gives target `t` a score in every row (else no tree ever does).
    has_score: Vec<bool>,
    aggregate: Aggregate,
    base_values: Vec<f32>,
    transform: PostTransform,
    classifier: Option<Classifier>,
    /// The branch-free layout batches use, when every node has the same mode.
    lockstep: Option<Lockstep>,
    /// The QuickScorer layout, when every tree has at most 64 leaves and every node tests `<=` (or
    /// every node `<`): preferred at any batch size.
    quick: Option<QuickScorer>,
    /// The padded layout, when the forest is at most [`super::perfect::MAX_DEPTH`] deep and every
    /// node tests `<=` (or every node `<`): preferred over QuickScorer.
    perfect: Option<Perfect>,
}

/// Rows walked together through one tree: their loads and comparisons overlap instead of waiting on
/// each other.
const BLOCK: usize = 8;

/// Set in [`LockNode::feature`]: a missing (NaN) value takes the `yes` branch.
const NAN_YES: u32 = 1 << 31;

/// Inner nodes, then one node per leaf that points at itself: every row walks exactly the tree's
/// depth, and a row that reached its leaf early stays there, so the walk has no data-dependent exit.
#[derive(Debug)]
struct Lockstep {
    nodes: Vec<Node>,
    /// Each tree's root and depth.
    trees: Vec<(u32, u32)>,
    /// The first leaf node's index.
    inner: u32,
}

#[derive(Debug)]
struct Classifier {
    /// Two classes whose leaves all weigh one class.
    binary_case: bool,
    weights_all_positive: bool,
}

impl TreeEnsemble {
    /// Scores per row: the classes of a classifier, the targets of a regressor.
    pub fn outputs(&self) -> usize {
        self.targets
    }

    pub fn compile(node: &NodeProto, classifier: bool, features: usize) -> Result<TreeEnsemble, String> {
        let prefix = if classifier { "class" } else { "target" };
        let mut known = vec![
            "base_values",
            "nodes_falsenodeids",
            "nodes_featureids",
            "nodes_hitrates",
            "nodes_missing_value_tracks_true",
            "nodes_modes",
            "nodes_nodeids",
            "nodes_treeids",
            "nodes_truenodeids",
            "nodes_values",
            "post_transform",
        ];
        if classifier {
            known.extend([
                "class_ids",
                "class_nodeids",
                "class_treeids",
                "class_weights",
                "classlabels_int64s",
                "classlabels_strings",
            ]);
        } else {
            known.extend([
                "aggregate_function",
                "n_targets",
                "target_ids",
                "target_nodeids",
                "target_treeids",
                "target_weights",
            ]);
        }
        // The *_as_tensor attributes hold float64 thresholds or weights: ONNX Runtime then compares
        // in float64, which float32 thresholds cannot reproduce exactly.
        known_attributes(node, &known)?;
        let transform = PostTransform::parse(attr_s(node, "post_transform").as_deref())?;
        let aggregate = match attr_s(node, "aggregate_function").as_deref() {
            None | Some("SUM") => Aggregate::Sum,
            Some("AVERAGE") => Aggregate::Average,
            Some("MIN") => Aggregate::Min,
            Some("MAX") => Aggregate::Max,
            Some(other) => return Err(format!("aggregate_function {other:?}")),
        };
        let targets = if classifier {
            attr_ints(node, "classlabels_int64s").len().max(attr_strings(node, "classlabels_strings").len())
        } else {
            usize::try_from(attr_i(node, "n_targets").unwrap_or(1)).map_err(|_| "a negative n_targets")?
        };
        if targets == 0 || (classifier && targets < 2) {
            return Err(format!("{targets} {prefix}es"));
        }

        let tree_ids = attr_ints(node, "nodes_treeids");
        let node_ids = attr_ints(node, "nodes_nodeids");
        let feature_ids = attr_ints(node, "nodes_featureids");
        let values = attr_floats(node, "nodes_values");
        let modes = attr_strings(node, "nodes_modes");
        let yes_ids = attr_ints(node, "nodes_truenodeids");
        let no_ids = attr_ints(node, "nodes_falsenodeids");
        let missing = attr_ints(node, "nodes_missing_value_tracks_true");
        let n = tree_ids.len();
        if [node_ids.len(), feature_ids.len(), modes.len(), yes_ids.len(), no_ids.len()].iter().any(|l| *l != n)
            || (values.len() != n)
            || (!missing.is_empty() && missing.len() != n)
        {
            return Err("node attributes of different lengths (or float64 thresholds)".into());
        }
        let w_trees = attr_ints(node, &format!("{prefix}_treeids"));
        let w_nodes = attr_ints(node, &format!("{prefix}_nodeids"));
        let w_ids = attr_ints(node, &format!("{prefix}_ids"));
        let w_values = attr_floats(node, &format!("{prefix}_weights"));
        if w_trees.len() != w_nodes.len() || w_ids.len() != w_trees.len() || w_values.len() != w_trees.len() {
            return Err(format!("{prefix} attributes of different lengths (or float64 weights)"));
        }

        // (tree, node id) → position in the attribute arrays.
        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        for i in 0..n {
            if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
                return Err(format!("tree {} has node {} twice", tree_ids[i], node_ids[i]));
            }
        }
        let mut weights_of: HashMap<(i64, i64), Vec<(u32, f32)>> = HashMap::new();
        for j in 0..w_trees.len() {
            let t =
                usize::try_from(w_ids[j]).ok().filter(|t| *t < targets).ok_or(format!("{prefix} id {}", w_ids[j]))?;
            weights_of.entry((w_trees[j], w_nodes[j])).or_default().push((t as u32, w_values[j]));
        }
        // Leaves first get indices, then inner nodes (leaf-tagged children point at leaves).
        let mut leaf_of = vec![u32::MAX; n];
        let mut inner_of = vec![u32::MAX; n];
        let mut leaf_start = vec![0u32];
        let mut leaf_weights = Vec::new();
        let mut inner = 0u32;
        let mut parsed_modes = Vec::with_capacity(n);
        for i in 0..n {
            if modes[i] == "LEAF" {
                leaf_of[i] = (leaf_start.len() - 1) as u32;
                leaf_weights.extend(weights_of.get(&(tree_ids[i], node_ids[i])).cloned().unwrap_or_default());
                leaf_start.push(leaf_weights.len() as u32);
            } else {
                if weights_of.contains_key(&(tree_ids[i], node_ids[i])) {
                    return Err(format!("tree {} node {} is not a leaf but carries weights", tree_ids[i], node_ids[i]));
                }
                parsed_modes.push(match modes[i].as_str() {
                    "BRANCH_LEQ" => Mode::Leq,
                    "BRANCH_LT" => Mode::Lt,
                    "BRANCH_GTE" => Mode::Gte,
                    "BRANCH_GT" => Mode::Gt,
                    "BRANCH_EQ" => Mode::Eq,
                    "BRANCH_NEQ" => Mode::Neq,
                    other => return Err(format!("node mode {other:?}")),
                });
                inner_of[i] = inner;
                inner += 1;
            }
        }
        if leaf_start.len() as u64 >= u64::from(LEAF) || u64::from(inner) >= u64::from(LEAF) {
            return Err("too many nodes".into());
        }
        let child = |tree: i64, id: i64| -> Result<u32, String> {
            let &i = index.get(&(tree, id)).ok_or(format!("tree {tree} has no node {id}"))?;
            Ok(if leaf_of[i] != u32::MAX { leaf_of[i] | LEAF } else { inner_of[i] })
        };
        let mut nodes = Vec::with_capacity(inner as usize);
        let mut missing_true = Vec::with_capacity(inner as usize);
        let mut is_child = vec![false; n];
        for i in 0..n {
            if leaf_of[i] != u32::MAX {
                continue;
            }
            let feature = usize::try_from(feature_ids[i])
                .ok()
                .filter(|f| *f < features)
                .ok_or(format!("node {} reads feature {} of {features}", node_ids[i], feature_ids[i]))?;
            let yes = child(tree_ids[i], yes_ids[i])?;
            let no = child(tree_ids[i], no_ids[i])?;
            for id in [yes_ids[i], no_ids[i]] {
                is_child[index[&(tree_ids[i], id)]] = true;
            }
            nodes.push(Node { feature: feature as u32, threshold: values[i], yes, no });
            missing_true.push(missing.get(i).is_some_and(|m| *m != 0));
        }
        // Roots: the nodes no node points at, one per tree, in order of first appearance.
        let mut roots = Vec::new();
        let mut seen_trees: Vec<i64> = Vec::new();
        for i in 0..n {
            if !is_child[i] {
                if seen_trees.contains(&tree_ids[i]) {
                    return Err(format!("tree {} has more than one root", tree_ids[i]));
                }
                seen_trees.push(tree_ids[i]);
                roots.push(if leaf_of[i] != u32::MAX { leaf_of[i] | LEAF } else { inner_of[i] });
            }
        }
        if roots.is_empty() {
            return Err("no trees".into());
        }
        check_acyclic(&nodes, &roots)?;

        let mode = parsed_modes.first().copied().unwrap_or(Mode::Leq);
        let modes = parsed_modes.iter().any(|m| *m != mode).then_some(parsed_modes);
        if !missing_true.iter().any(|m| *m) {
            missing_true.clear();
        }
        let leaves = leaf_start.len() - 1;
        // Which targets get a score: static per target, or refused.
        let mut has_score = vec![false; targets];
        for (t, has) in has_score.iter_mut().enumerate() {
            let carried = |l: usize| {
                leaf_weights[leaf_start[l] as usize..leaf_start[l + 1] as usize].iter().any(|(id, _)| *id as usize == t)
            };
            let any = (0..leaves).any(carried);
            if !any {
                continue;
            }
            // Some tree whose every leaf carries t: then every row gets a score for t.
            let always = roots.iter().any(|&r| leaves_of(&nodes, r).iter().all(|&l| carried(l as usize)));
            if !always {
                return Err(format!("{prefix} {t} is scored by some leaves of every tree but not all"));
            }
            *has = true;
        }
        let single = {
            let first = leaf_weights.first().map(|(t, _)| *t);
            let one_each = (0..leaves).all(|l| leaf_start[l + 1] - leaf_start[l] == 1);
            match first {
                Some(t) if one_each && leaf_weights.iter().all(|(id, _)| *id == t) => {
                    Some((t, leaf_weights.iter().map(|(_, w)| *w).collect()))
                }
                _ => None,
            }
        };
        let base_values = attr_floats(node, "base_values");
        let classifier = if classifier {
            let mut classes: Vec<u32> = leaf_weights.iter().map(|(t, _)| *t).collect();
            classes.sort_unstable();
            classes.dedup();
            let c = Classifier {
                binary_case: targets == 2 && classes.len() == 1,
                weights_all_positive: w_values.iter().all(|w| *w >= 0.0),
            };
            // Cases where ONNX Runtime writes one score into a two-column output: refused.
            let one_score = targets == 2 && !has_score[1] && base_values.len() <= 1;
            if one_score && (transform == PostTransform::Probit || (!c.binary_case && base_values.len() == 1)) {
                return Err("a binary classifier that writes a single score".into());
            }
            if targets > 2 && base_values.len() > targets {
                return Err("more base values than classes".into());
            }
            Some(c)
        } else {
            if !(base_values.is_empty() || base_values.len() == 1 || base_values.len() == targets) {
                return Err(format!("{} base values for {targets} targets", base_values.len()));
            }
            None
        };
        let lockstep = modes.is_none().then(|| lockstep(&nodes, &missing_true, &roots, leaves as u32));
        let (quick, perfect) = match (&modes, mode) {
            (None, Mode::Leq | Mode::Lt) => {
                let column = |f: fn(&Node) -> u32| nodes.iter().map(f).collect::<Vec<u32>>();
                let (tested, yes, no) = (column(|n| n.feature), column(|n| n.yes), column(|n| n.no));
                let thresholds: Vec<f32> = nodes.iter().map(|n| n.threshold).collect();
                let forest = Forest {
                    features: &tested,
                    thresholds: &thresholds,
                    yes: &yes,
                    no: &no,
                    missing_yes: &missing_true,
                    roots: &roots,
                    leaf_flag: LEAF,
                    width: features,
                    strict: mode == Mode::Lt,
                };
                match Perfect::new(&forest) {
                    Some(perfect) => {
                        let values: Option<&Vec<f32>> = single.as_ref().map(|(_, values)| values);
                        let perfect = match values {
                            Some(v) => perfect.with_leaf_values(v),
                            None => perfect,
                        };
                        (None, Some(perfect))
                    }
                    None => (QuickScorer::new(&forest), None),
                }
            }
            _ => (None, None),
        };
        Ok(TreeEnsemble {
            lockstep,
            quick,
            perfect,
            nodes,
            modes,
            mode,
            missing_true,
            roots,
            leaf_start,
            leaf_weights,
            single,
            targets,
            has_score,
            aggregate,
            base_values,
            transform,
            classifier,
        })
    }

    /// The leaf row `x` reaches from `root`.
    #[inline(always)]
    fn leaf(&self, mut at: u32, x: &[f32]) -> usize {
        while at & LEAF == 0 {
            let node = &self.nodes[at as usize];
            let v = x[node.feature as usize];
            let t = node.threshold;
            let mode = match &self.modes {
                None => self.mode,
                Some(m) => m[at as usize],
            };
            let mut yes = match mode {
                Mode::Leq => v <= t,
                Mode::Lt => v < t,
                Mode::Gte => v >= t,
                Mode::Gt => v > t,
                Mode::Eq => v == t,
                Mode::Neq => v != t,
            };
            if !self.missing_true.is_empty() && self.missing_true[at as usize] && v.is_nan() {
                yes = true;
            }
            at = if yes { node.yes } else { node.no };
        }
        (at & !LEAF) as usize
    }

    /// Scores `rows` rows of `x` (`width` columns) into `out` (`rows × targets`).
    pub fn run(&self, x: &[f32], width: usize, rows: usize, out: &mut [f32]) {
        let t = self.targets;
        let init = match self.aggregate {
            Aggregate::Sum | Aggregate::Average => 0.0,
            Aggregate::Min => f32::INFINITY,
            Aggregate::Max => f32::NEG_INFINITY,
        };
        out[..rows * t].fill(init);
        if let Some(perfect) = &self.perfect {
            match (&self.single, self.aggregate) {
                // The common case (boosting, one score): one add per tree, no dispatch.
                (Some((target, _)), Aggregate::Sum | Aggregate::Average) => {
                    let done = perfect.sum(x, width, rows, out, t, *target as usize);
                    debug_assert!(done, "a single-valued forest's layout keeps its leaf values");
                }
                _ => perfect.run(x, width, rows, |r, leaf| self.add_leaf(leaf, &mut out[r * t..(r + 1) * t])),
            }
            self.finish(rows, out);
            return;
        }
        if let Some(quick) = &self.quick {
            match (&self.single, self.aggregate) {
                (Some((target, values)), Aggregate::Sum | Aggregate::Average) => {
                    let target = *target as usize;
                    quick.run(x, width, rows, |r, leaf| out[r * t + target] += values[leaf]);
                }
                _ => quick.run(x, width, rows, |r, leaf| self.add_leaf(leaf, &mut out[r * t..(r + 1) * t])),
            }
            self.finish(rows, out);
            return;
        }
        if let Some(ls) = self.lockstep.as_ref().filter(|_| rows >= BLOCK / 2) {
            match self.mode {
                Mode::Leq => self.walk_blocks::<0>(ls, x, width, rows, out),
                Mode::Lt => self.walk_blocks::<1>(ls, x, width, rows, out),
                Mode::Gte => self.walk_blocks::<2>(ls, x, width, rows, out),
                Mode::Gt => self.walk_blocks::<3>(ls, x, width, rows, out),
                Mode::Eq => self.walk_blocks::<4>(ls, x, width, rows, out),
                Mode::Neq => self.walk_blocks::<5>(ls, x, width, rows, out),
            }
            self.finish(rows, out);
            return;
        }
        // Tree by tree: one tree's nodes stay in cache while every row walks it.
        for &root in &self.roots {
            for r in 0..rows {
                let leaf = self.leaf(root, &x[r * width..(r + 1) * width]);
                self.add_leaf(leaf, &mut out[r * t..(r + 1) * t]);
            }
        }
        self.finish(rows, out);
    }

    /// Blocks of rows walk each tree in lockstep, branch-free, `MODE` fixed at compile time. A last
    /// short block repeats its last row, so every block has `BLOCK` independent walks the compiler
    /// unrolls and the processor overlaps.
    fn walk_blocks<const MODE: u8>(&self, ls: &Lockstep, x: &[f32], width: usize, rows: usize, out: &mut [f32]) {
        let t = self.targets;
        let mut r0 = 0;
        while r0 < rows {
            let b = (rows - r0).min(BLOCK);
            let bases: [usize; BLOCK] = std::array::from_fn(|k| (r0 + k.min(b - 1)) * width);
            for &(root, depth) in &ls.trees {
                let mut at = [root; BLOCK];
                for _ in 0..depth {
                    for k in 0..BLOCK {
                        let n = &ls.nodes[at[k] as usize];
                        let v = x[bases[k] + (n.feature & !NAN_YES) as usize];
                        let th = n.threshold;
                        let cmp = match MODE {
                            0 => v <= th,
                            1 => v < th,
                            2 => v >= th,
                            3 => v > th,
                            4 => v == th,
                            _ => v != th,
                        };
                        let yes = cmp | ((n.feature & NAN_YES != 0) & v.is_nan());
                        // A select by arithmetic, not a branch: the comparison is a coin flip.
                        at[k] = n.no ^ ((n.no ^ n.yes) & 0u32.wrapping_sub(u32::from(yes)));
                    }
                }
                for (k, a) in at.iter().enumerate().take(b) {
                    let leaf = (a - ls.inner) as usize;
                    self.add_leaf(leaf, &mut out[(r0 + k) * t..(r0 + k + 1) * t]);
                }
            }
            r0 += b;
        }
    }

    /// Scores without a tree's answer cleared, then finished per row.
    fn finish(&self, rows: usize, out: &mut [f32]) {
        let t = self.targets;
        for scores in out[..rows * t].chunks_exact_mut(t) {
            for (s, has) in scores.iter_mut().zip(&self.has_score) {
                if !has {
                    *s = 0.0;
                }
            }
            match &self.classifier {
                Some(c) => self.finish_classifier(c, scores),
                None => self.finish_regressor(scores),
            }
        }
    }

    /// A leaf's weights into one row's scores.
    #[inline(always)]
    fn add_leaf(&self, leaf: usize, scores: &mut [f32]) {
        match &self.single {
            Some((target, values)) => self.add(&mut scores[*target as usize], values[leaf]),
            None => {
                let (lo, hi) = (self.leaf_start[leaf] as usize, self.leaf_start[leaf + 1] as usize);
                for &(target, w) in &self.leaf_weights[lo..hi] {
                    self.add(&mut scores[target as usize], w);
                }
            }
        }
    }

    #[inline(always)]
    fn add(&self, score: &mut f32, w: f32) {
        match self.aggregate {
            Aggregate::Sum | Aggregate::Average => *score += w,
            Aggregate::Min => *score = score.min(w),
            Aggregate::Max => *score = score.max(w),
        }
    }

    fn finish_regressor(&self, scores: &mut [f32]) {
        let trees = self.roots.len() as f32;
        if self.targets == 1 {
            // One target: the base value is the single one given, if any.
            let origin = if self.base_values.len() == 1 { self.base_values[0] } else { 0.0 };
            if self.aggregate == Aggregate::Average {
                scores[0] /= trees;
            }
            scores[0] += origin;
            if self.transform == PostTransform::Probit {
                scores[0] = super::ml::probit(scores[0]);
            }
            return;
        }
        let use_base = self.base_values.len() == self.targets;
        for (i, s) in scores.iter_mut().enumerate() {
            if self.aggregate == Aggregate::Average {
                *s /= trees;
            }
            if use_base {
                *s += self.base_values[i];
            }
        }
        post_transform_row(scores, self.transform);
    }

    fn finish_classifier(&self, c: &Classifier, s: &mut [f32]) {
        let bv = &self.base_values;
        if self.targets > 2 {
            for (k, b) in bv.iter().enumerate() {
                s[k] += b;
            }
            post_transform_row(s, self.transform);
            return;
        }
        let (has0, mut has1) = (self.has_score[0], self.has_score[1]);
        let mut second = -1i8;
        match bv.len() {
            2 => {
                if has1 {
                    s[1] = bv[1] + s[0];
                    s[0] = -s[1];
                } else {
                    s[1] += bv[1];
                    s[0] += bv[0];
                    has1 = true;
                }
            }
            1 => s[0] += bv[0],
            0 => second = 3,
            _ => {}
        }
        let single = !has1;
        let positive = if has1 {
            s[1]
        } else if has0 {
            s[0]
        } else {
            0.0
        };
        if c.binary_case {
            second = match (c.weights_all_positive, positive) {
                (true, p) if p > 0.5 => 0,
                (true, _) => 1,
                (false, p) if p > 0.0 => 2,
                (false, _) => 3,
            };
        }
        if !single {
            post_transform_row(s, self.transform);
            return;
        }
        let v = s[0];
        match second {
            0 | 1 => {
                s[0] = 1.0 - v;
                s[1] = v;
            }
            _ if self.transform == PostTransform::Logistic => {
                s[0] = super::dense::sigmoid(-v);
                s[1] = super::dense::sigmoid(v);
            }
            _ => {
                s[0] = -v;
                s[1] = v;
            }
        }
    }
}

/// The lockstep layout of `nodes` (leaves become self-looping nodes after the inner ones).
fn lockstep(nodes: &[Node], missing_true: &[bool], roots: &[u32], leaves: u32) -> Lockstep {
    let inner = nodes.len() as u32;
    let map = |c: u32| if c & LEAF != 0 { inner + (c & !LEAF) } else { c };
    let mut out: Vec<Node> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let nan = if missing_true.get(i).copied().unwrap_or(false) { NAN_YES } else { 0 };
            Node { feature: n.feature | nan, threshold: n.threshold, yes: map(n.yes), no: map(n.no) }
        })
        .collect();
    out.extend((0..leaves).map(|l| Node { feature: 0, threshold: 0.0, yes: inner + l, no: inner + l }));
    let depth = |root: u32| -> u32 {
        let mut deepest = 0;
        let mut stack = vec![(root, 0u32)];
        while let Some((at, d)) = stack.pop() {
            if at & LEAF != 0 {
                deepest = deepest.max(d);
            } else {
                stack.push((nodes[at as usize].yes, d + 1));
                stack.push((nodes[at as usize].no, d + 1));
            }
        }
        deepest
    };
    let trees = roots.iter().map(|&r| (map(r), depth(r))).collect();
    Lockstep { nodes: out, trees, inner }
}

/// The leaves under `root`.
fn leaves_of(nodes: &[Node], root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(at) = stack.pop() {
        if at & LEAF != 0 {
            out.push(at & !LEAF);
        } else {
            let n = &nodes[at as usize];
            stack.push(n.yes);
            stack.push(n.no);
        }
    }
    out
}

/// Refuses a tree that loops (a walk would never end) or shares nodes between trees.
fn check_acyclic(nodes: &[Node], roots: &[u32]) -> Result<(), String> {
    let mut visited = vec![false; nodes.len()];
    for &root in roots {
        let mut stack = vec![root];
        while let Some(at) = stack.pop() {
            if at & LEAF != 0 {
                continue;
            }
            if std::mem::replace(&mut visited[at as usize], true) {
                return Err("a tree's nodes form a loop or are shared".into());
            }
            stack.push(nodes[at as usize].yes);
            stack.push(nodes[at as usize].no);
        }
    }
    Ok(())
}
