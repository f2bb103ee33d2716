//! Plans as pictures: a physical plan with its operators' figures drawn as SVG (laid out
//! here, no external tool) or written as Graphviz DOT. The dashboard draws running queries
//! with it, and `EXPLAIN` can write either.

use std::fmt::Write;

use crate::monitor::PlanNode;
use crate::output::{bytes, thousands};

const WIDTH: f64 = 280.0;
const HEIGHT: f64 = 66.0;
const GAP_X: f64 = 20.0;
const GAP_Y: f64 = 36.0;
const MARGIN: f64 = 12.0;
/// Characters of an operator's description shown in its box (all of it on hover).
const DETAIL_CHARS: usize = 44;

/// One box of the drawing: where it is, and the node it shows.
struct Placed<'a> {
    node: &'a PlanNode,
    x: f64,
    depth: usize,
    parent: Option<usize>,
}

/// Place every node: leaves side by side from the left, a parent centred over its inputs,
/// the root on top (data flows up, as `EXPLAIN` reads).
fn layout(root: &PlanNode) -> Vec<Placed<'_>> {
    fn place<'a>(
        node: &'a PlanNode,
        depth: usize,
        parent: Option<usize>,
        next_leaf: &mut f64,
        out: &mut Vec<Placed<'a>>,
    ) -> f64 {
        let index = out.len();
        out.push(Placed {
            node,
            x: 0.0,
            depth,
            parent,
        });
        let x = if node.children.is_empty() {
            let x = *next_leaf;
            *next_leaf += 1.0;
            x
        } else {
            let xs: Vec<f64> = node
                .children
                .iter()
                .map(|c| place(c, depth + 1, Some(index), next_leaf, out))
                .collect();
            (xs[0] + xs[xs.len() - 1]) / 2.0
        };
        out[index].x = x;
        x
    }
    let mut out = Vec::new();
    place(root, 0, None, &mut 0.0, &mut out);
    out
}

/// The figures shown under an operator's name, e.g. `1,204 rows · 12.3 ms · 2 parts`.
pub fn figures(node: &PlanNode) -> String {
    let mut parts = Vec::new();
    if let Some(rows) = node.output_rows {
        let unit = if rows == 1 { "row" } else { "rows" };
        parts.push(format!("{} {unit}", thousands(rows)));
    }
    if let Some(ns) = node.compute_ns.filter(|n| *n > 0) {
        parts.push(duration(ns));
    }
    if let Some(b) = node.peak_memory.filter(|b| *b > 0) {
        parts.push(format!("{} mem", bytes(b)));
    }
    if let Some(b) = node.spilled_bytes.filter(|b| *b > 0) {
        parts.push(format!("{} spilled", bytes(b)));
    }
    parts.push(format!(
        "{} part{}",
        node.partitions,
        if node.partitions == 1 { "" } else { "s" }
    ));
    parts.join(" · ")
}

/// The plan drawn as a standalone SVG document: one `<g class="operator">` per operator,
/// shaded by its share of the plan's CPU time.
pub fn svg(root: &PlanNode) -> String {
    let placed = layout(root);
    let columns = placed.iter().map(|p| p.x).fold(0.0, f64::max) + 1.0;
    let rows = placed.iter().map(|p| p.depth).max().unwrap_or(0) as f64 + 1.0;
    let width = MARGIN * 2.0 + columns * WIDTH + (columns - 1.0) * GAP_X;
    let height = MARGIN * 2.0 + rows * HEIGHT + (rows - 1.0) * GAP_Y;
    let left = |p: &Placed| MARGIN + p.x * (WIDTH + GAP_X);
    let top = |p: &Placed| MARGIN + p.depth as f64 * (HEIGHT + GAP_Y);
    let busiest = placed
        .iter()
        .filter_map(|p| p.node.compute_ns)
        .max()
        .unwrap_or(0)
        .max(1);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plan\" width=\"{width:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         font-family=\"system-ui, sans-serif\" font-size=\"12\">"
    );
    for p in &placed {
        if let Some(parent) = p.parent {
            let q = &placed[parent];
            let _ = writeln!(
                out,
                "<line class=\"edge\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" \
                 stroke=\"#8a8f98\" stroke-width=\"1.5\"/>",
                left(p) + WIDTH / 2.0,
                top(p),
                left(q) + WIDTH / 2.0,
                top(q) + HEIGHT
            );
        }
    }
    for (i, p) in placed.iter().enumerate() {
        let share = p.node.compute_ns.unwrap_or(0) as f64 / busiest as f64;
        // From white to orange as the operator's share of CPU time grows.
        let fill = format!(
            "rgb(255,{:.0},{:.0})",
            255.0 - 90.0 * share,
            255.0 - 200.0 * share
        );
        let (x, y) = (left(p), top(p));
        let detail = p.node.detail.trim();
        let short = match detail.char_indices().nth(DETAIL_CHARS) {
            Some((cut, _)) => format!("{}…", &detail[..cut]),
            None => detail.to_string(),
        };
        let _ = writeln!(
            out,
            "<g class=\"operator\" data-id=\"{i}\" data-operator=\"{}\">\
             <title>{}</title>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" rx=\"5\" \
             fill=\"{fill}\" stroke=\"#4b5563\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#4b5563\">{}</text></g>",
            escape(&p.node.operator),
            escape(&format!("{}\n{}", detail, figures(p.node))),
            x + 8.0,
            y + 18.0,
            escape(&p.node.operator),
            x + 8.0,
            y + 37.0,
            escape(&figures(p.node)),
            x + 8.0,
            y + 56.0,
            escape(&short),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The plan as a Graphviz graph: one box per operator with its description and figures, an
/// edge from each input to the operator that reads it.
pub fn dot(root: &PlanNode) -> String {
    let placed = layout(root);
    let mut out = String::from(
        "digraph plan {\n  rankdir=BT;\n  node [shape=box, fontname=\"sans-serif\", fontsize=10];\n",
    );
    for (i, p) in placed.iter().enumerate() {
        let label = format!(
            "{}\\n{}\\n{}",
            dot_escape(&p.node.operator),
            dot_escape(&figures(p.node)),
            dot_escape(p.node.detail.trim())
        );
        let _ = writeln!(out, "  n{i} [label=\"{label}\"];");
    }
    for (i, p) in placed.iter().enumerate() {
        if let Some(parent) = p.parent {
            let _ = writeln!(out, "  n{i} -> n{parent};");
        }
    }
    out.push_str("}\n");
    out
}

/// `text` safe inside XML or HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn duration(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.2} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n => format!("{:.0} µs", n as f64 / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(operator: &str, children: Vec<PlanNode>) -> PlanNode {
        PlanNode {
            operator: operator.into(),
            detail: format!("{operator}: a < 3 & b > \"x\""),
            output_rows: Some(1234),
            compute_ns: Some(2_500_000),
            spilled_bytes: None,
            peak_memory: None,
            partitions: 2,
            children,
        }
    }

    #[test]
    fn the_svg_has_one_box_per_operator_and_one_edge_per_input() {
        let plan = node(
            "HashJoinExec",
            vec![
                node("DataSourceExec", vec![]),
                node("FilterExec", vec![node("DataSourceExec", vec![])]),
            ],
        );
        let svg = svg(&plan);
        assert_eq!(svg.matches("<g class=\"operator\"").count(), 4);
        assert_eq!(svg.matches("<line class=\"edge\"").count(), 3);
        assert!(svg.contains("1,234 rows · 2.5 ms · 2 parts"), "{svg}");
        // Descriptions are escaped.
        assert!(svg.contains("a &lt; 3 &amp; b &gt; &quot;x&quot;"), "{svg}");
        assert!(!svg.contains("a < 3"));
        // The join sits above the middle of its two inputs.
        let width = svg.split("width=\"").nth(1).unwrap();
        assert!(width.starts_with("604\""), "{width}");
    }

    #[test]
    fn the_dot_graph_links_each_input_to_its_reader() {
        let plan = node("SortExec", vec![node("DataSourceExec", vec![])]);
        let dot = dot(&plan);
        assert!(dot.starts_with("digraph plan {"));
        assert!(dot.contains("n1 -> n0;"), "{dot}");
        assert!(dot.contains("b > \\\"x\\\""), "{dot}");
    }
}
