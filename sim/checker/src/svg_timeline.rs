//! The timeline of a history as an SVG picture a browser opens: a time axis in simulated
//! seconds; faults as shaded spans over the whole chart (and labelled bars in the nemesis
//! lane); leaders per term (one lane per node of each produced-to partition); one lane per
//! client process with each operation a bar from invoke to completion, coloured by outcome
//! (ok green, fail red, info amber, never completed grey). Operations a violation names are
//! outlined in black with a marker above. Every bar has a tooltip (`<title>`) with the details.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use svg::Document;
use svg::node::element::Group;
use svg::node::element::Line;
use svg::node::element::Rectangle;
use svg::node::element::Text;
use svg::node::element::Title;

use crate::history::History;
use crate::timeline::Outcome;
use crate::timeline::Timeline;
use crate::verdict::Verdict;

const WIDTH_PX: f64 = 1600.0;
const LEFT_PX: f64 = 130.0;
const RIGHT_PX: f64 = 20.0;
const LANE_PX: f64 = 18.0;
const BAR_PX: f64 = 12.0;
/// Operations drawn at most (the flagged ones always); a run this long is cut, saying so.
pub const BARS_MAX: usize = 40_000;

fn fault_colour(fault: &str) -> &'static str {
    match fault {
        "crash" => "#d62728",
        "isolate" | "one-way" | "partition" | "bridge" => "#9467bd",
        "packet-loss" | "delay" | "reorder" => "#8c564b",
        "clock-drift" => "#17becf",
        "fsync-error" | "slow-disk" | "crash-in-fsync" => "#e377c2",
        _ => "#7f7f7f",
    }
}

fn outcome_colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "#2ca02c",
        Outcome::Fail => "#d62728",
        Outcome::Info => "#ff9f1c",
        Outcome::Open => "#999999",
    }
}

struct Scale {
    end_ns: u64,
}

impl Scale {
    fn x(&self, ns: u64) -> f64 {
        LEFT_PX + (WIDTH_PX - LEFT_PX - RIGHT_PX) * (ns as f64 / self.end_ns.max(1) as f64)
    }

    fn w(&self, from: u64, to: u64) -> f64 {
        (self.x(to) - self.x(from)).max(1.0)
    }
}

fn label(x: f64, y: f64, text: &str) -> Text {
    Text::new(text).set("x", x).set("y", y).set("font-size", 11).set("font-family", "monospace")
}

fn bar(x: f64, y: f64, w: f64, h: f64, fill: &str, title: &str) -> Rectangle {
    Rectangle::new().set("x", x).set("y", y).set("width", w).set("height", h).set("fill", fill).add(Title::new(title))
}

/// The SVG document of `history`, violations of `verdicts` marked, `caption` on top.
pub fn render(history: &History, verdicts: &[Verdict], caption: &str) -> String {
    let t = Timeline::build(history);
    let flagged = crate::timeline::flagged(verdicts);
    let scale = Scale { end_ns: t.end_ns };
    let mut doc_body = Group::new();
    let mut y = 40.0;

    // Nemesis lane(s): faults stacked so that bars never overlap.
    let mut rows_end: Vec<u64> = Vec::new();
    let mut fault_rows = Vec::new();
    for f in &t.faults {
        let row = rows_end.iter().position(|end| *end < f.start_ns).unwrap_or(rows_end.len());
        if row == rows_end.len() {
            rows_end.push(0);
        }
        rows_end[row] = f.end_ns;
        fault_rows.push(row);
    }
    let fault_lanes = rows_end.len().max(1);
    let chart_top = y;
    let mut lanes = Group::new();
    lanes = lanes.add(label(4.0, y + BAR_PX, "nemesis"));
    for (f, row) in t.faults.iter().zip(&fault_rows) {
        let fy = y + *row as f64 * LANE_PX;
        let title = format!("{} from {:.3}s to {:.3}s", f.label, f.start_ns as f64 / 1e9, f.end_ns as f64 / 1e9);
        lanes = lanes.add(bar(
            scale.x(f.start_ns),
            fy,
            scale.w(f.start_ns, f.end_ns),
            BAR_PX,
            fault_colour(&f.fault),
            &title,
        ));
        lanes = lanes.add(label(scale.x(f.start_ns) + 2.0, fy + BAR_PX - 2.0, &f.label).set("fill", "#000"));
    }
    y += fault_lanes as f64 * LANE_PX + 6.0;

    // Leaders: one lane per (partition, node).
    let leader_lanes: BTreeSet<(&str, u64)> = t.leaders.iter().map(|l| (l.partition.as_str(), l.node)).collect();
    let leader_y: BTreeMap<(&str, u64), f64> =
        leader_lanes.iter().enumerate().map(|(i, k)| (*k, y + i as f64 * LANE_PX)).collect();
    for ((partition, node), ly) in &leader_y {
        lanes = lanes.add(label(4.0, ly + BAR_PX, &format!("{partition} leader n{node}")));
    }
    for l in &t.leaders {
        let ly = leader_y[&(l.partition.as_str(), l.node)];
        let title =
            format!("node {} leads {} in term {} from {:.3}s", l.node, l.partition, l.term, l.start_ns as f64 / 1e9);
        let hue = (l.term * 47) % 360;
        lanes = lanes.add(bar(
            scale.x(l.start_ns),
            ly,
            scale.w(l.start_ns, l.end_ns),
            BAR_PX,
            &format!("hsl({hue},55%,70%)"),
            &title,
        ));
        lanes = lanes.add(label(scale.x(l.start_ns) + 2.0, ly + BAR_PX - 2.0, &format!("t{}", l.term)));
    }
    y += leader_lanes.len() as f64 * LANE_PX + 6.0;

    // Client processes.
    let processes = t.processes();
    let process_y: BTreeMap<u64, f64> =
        processes.iter().enumerate().map(|(i, p)| (*p, y + i as f64 * LANE_PX)).collect();
    for (p, py) in &process_y {
        let f = t.ops.iter().find(|o| o.process == *p).map(|o| o.f.as_str()).unwrap_or("");
        lanes = lanes.add(label(4.0, py + BAR_PX, &format!("p{p} {f}")));
    }
    let mut drawn = 0usize;
    let mut cut = false;
    for op in &t.ops {
        let is_flagged = op.events.iter().any(|e| flagged.contains(e));
        if drawn >= BARS_MAX && !is_flagged {
            cut = true;
            continue;
        }
        drawn += 1;
        let py = process_y[&op.process];
        let title = format!(
            "{} ({:?}) {:.6}s..{:.6}s events {:?}",
            op.label,
            op.outcome,
            op.start_ns as f64 / 1e9,
            op.end_ns as f64 / 1e9,
            op.events
        );
        let mut r =
            bar(scale.x(op.start_ns), py, scale.w(op.start_ns, op.end_ns), BAR_PX, outcome_colour(op.outcome), &title);
        if is_flagged {
            r = r.set("stroke", "#000").set("stroke-width", 2);
            let mx = scale.x(op.start_ns);
            lanes = lanes
                .add(Text::new("▼").set("x", mx - 4.0).set("y", py - 1.0).set("font-size", 10).set("fill", "#000"));
        }
        lanes = lanes.add(r);
    }
    y += processes.len() as f64 * LANE_PX + 10.0;
    let chart_bottom = y;

    // Shaded fault spans behind everything.
    let mut shades = Group::new();
    for f in &t.faults {
        shades = shades.add(
            Rectangle::new()
                .set("x", scale.x(f.start_ns))
                .set("y", chart_top)
                .set("width", scale.w(f.start_ns, f.end_ns))
                .set("height", chart_bottom - chart_top)
                .set("fill", fault_colour(&f.fault))
                .set("fill-opacity", 0.10),
        );
    }

    // Time axis: a tick every 1, 2, 5, 10... seconds, about 20 in all.
    let mut axis = Group::new();
    let seconds = t.end_ns as f64 / 1e9;
    let step = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .find(|s| seconds / s <= 25.0)
        .unwrap_or(200.0);
    let mut s = 0.0;
    while s <= seconds {
        let x = scale.x((s * 1e9) as u64);
        axis = axis
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", chart_top - 4.0)
                    .set("y2", chart_bottom)
                    .set("stroke", "#ddd"),
            )
            .add(label(x - 8.0, chart_top - 8.0, &format!("{s:.1}s")));
        s += step;
    }
    let legend = format!(
        "ok green · fail red · info amber · open grey · outlined ▼ = named by a violation{}",
        if cut { format!(" · only {BARS_MAX} operations drawn") } else { String::new() }
    );
    doc_body = doc_body
        .add(label(4.0, 14.0, caption).set("font-size", 13))
        .add(label(4.0, 28.0, &legend))
        .add(shades)
        .add(axis)
        .add(lanes);
    let height = chart_bottom + 10.0;
    Document::new()
        .set("xmlns", "http://www.w3.org/2000/svg")
        .set("width", WIDTH_PX)
        .set("height", height)
        .set("viewBox", (0.0, 0.0, WIDTH_PX, height))
        .add(Rectangle::new().set("width", "100%").set("height", "100%").set("fill", "#fff"))
        .add(doc_body)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, EventType};
    use crate::payload::{Fault, Leader, Op, Produce};
    use crate::verdict::Violation;

    #[test]
    fn the_picture_has_a_bar_per_operation_fault_and_leader_and_marks_the_violation() {
        let produce = |v: &str, offset: Option<u64>| {
            Op::Produce(Produce { partition: "p1".into(), key: None, value: v.into(), offset, idempotent: false })
        };
        let h = History::new(vec![
            Event {
                process: 1,
                kind: EventType::Info,
                op: Op::Leader(Leader { node: 1, term: 3, partition: "p1".into() }),
                time_ns: 1,
            },
            Event { process: 10, kind: EventType::Invoke, op: produce("a<&>", None), time_ns: 10 },
            Event {
                process: 0,
                kind: EventType::Info,
                op: Op::Fault(Fault { fault: "crash".into(), node: Some(2), detail: Default::default() }),
                time_ns: 12,
            },
            Event { process: 10, kind: EventType::Ok, op: produce("a<&>", Some(0)), time_ns: 20 },
        ])
        .unwrap();
        let verdicts = vec![Verdict::new("acked_not_lost", vec![Violation::new("lost a", vec![1, 3])])];
        let svg = render(&h, &verdicts, "seed 1: acked_not_lost");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        // Text is escaped.
        assert!(svg.contains("a&lt;&amp;&gt;"), "{svg}");
        assert!(!svg.contains("a<&>"), "{svg}");
        assert!(svg.contains("stroke=\"#000\""), "the violating operation is outlined: {svg}");
        assert!(svg.contains("crash n2"), "{svg}");
        assert!(svg.contains("p1 leader n1") && svg.contains("\nt3\n"), "{svg}");
        let clean = render(&h, &[Verdict::new("acked_not_lost", vec![])], "seed 1");
        assert!(!clean.contains("stroke=\"#000\""), "{clean}");
    }
}
