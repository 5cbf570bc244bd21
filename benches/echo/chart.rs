//! The SVG chart of a comparison, written by hand (no plotting crate): on top, netgrace's
//! advantage over each tokio flavour on every metric, on one log scale where right of 1× means
//! netgrace is better; below, the raw medians, one small panel per metric (the connection storm
//! last).

use std::fmt::Write as _;

use crate::compare::{
    cpu_per_mb, cpu_per_message, rate, throughput, BESIDE, MEMORY, SHUTDOWN, SYSCALLS,
};
use crate::process::Kind;
use crate::storm::{self, BURSTS};
use crate::table::{number, Table};

const WIDTH: f64 = 980.0;
const MARGIN: f64 = 20.0;
const BAR: f64 = 13.0;
const GROUP_GAP: f64 = 9.0;
const HEADER: f64 = 38.0;
const CHAR: f64 = 6.6;
const FONT: &str = "font-family=\"system-ui, sans-serif\" font-size=\"12\"";

const SERVERS: [(&str, &str); 3] = [
    ("netgrace", "#e8590c"),
    ("tokio current_thread", "#1971c2"),
    ("tokio multi-thread", "#74c0fc"),
];
const VERSUS: [(&str, &str); 2] = [
    ("netgrace ÷ tokio current_thread", "#1971c2"),
    ("netgrace ÷ tokio multi-thread", "#74c0fc"),
];

/// One metric (or one scenario of a metric): a bar per series, and the target if there is one.
struct Group {
    label: String,
    values: Vec<Option<f64>>,
    target: Option<f64>,
}

struct Panel {
    title: String,
    /// Log scale centred on 1×, for ratios; otherwise linear from 0.
    ratios: bool,
    series: &'static [(&'static str, &'static str)],
    groups: Vec<Group>,
}

/// The whole chart for `table`, captioned with `machine`.
pub fn render(table: &Table, machine: &str) -> String {
    let mut panels = vec![advantage(table)];
    let pingpong = |n: &str| format!("pingpong 64 B × {n}");
    let servers = |label: &str| Kind::ALL.iter().map(|k| table.median(label, *k)).collect();
    let simple = |title: &str, label: &str, group: &str, target: Option<f64>| Panel {
        title: title.to_string(),
        ratios: false,
        series: &SERVERS,
        groups: vec![Group {
            label: group.to_string(),
            values: servers(label),
            target,
        }],
    };
    let scenarios = ["1", "50", "500", "10"];
    let mut rates: Vec<Group> = (scenarios.iter())
        .map(|n| group(format!("× {n}"), servers(&rate(&pingpong(n)))))
        .collect();
    rates.push(group("× 10 + 10k idle".into(), servers(BESIDE)));
    panels.push(Panel {
        title: "pingpong 64 B: messages/s (higher is better)".into(),
        ratios: false,
        series: &SERVERS,
        groups: rates,
    });
    panels.push(Panel {
        title: "pingpong 64 B: server CPU µs per message (lower is better)".into(),
        ratios: false,
        series: &SERVERS,
        groups: (scenarios[..3].iter())
            .map(|n| group(format!("× {n}"), servers(&cpu_per_message(&pingpong(n)))))
            .collect(),
    });
    let stream = "stream 64 KiB × 10";
    let (mb, cpu) = (throughput(stream), cpu_per_mb(stream));
    panels.push(simple("stream: MB/s (higher is better)", &mb, "× 10", None));
    panels.push(simple(
        "stream: server CPU µs per MB (lower)",
        &cpu,
        "× 10",
        None,
    ));
    let memory = "memory per idle connection, bytes (lower; mark: 128)";
    panels.push(simple(memory, MEMORY, "10 000", Some(128.0)));
    let shutdown = "shutdown, 10 000 idle: ms (lower; mark: 150)";
    panels.push(simple(shutdown, SHUTDOWN, "10 000", Some(150.0)));
    let syscalls = "syscalls per message (lower; mark: 2.05)";
    panels.push(simple(syscalls, SYSCALLS, "× 50", Some(2.05)));
    let bursts = |label: fn(usize) -> String| {
        (BURSTS.iter())
            .map(|b| group(storm::thousands(b.clients), servers(&label(b.clients))))
            .collect()
    };
    panels.push(Panel {
        title: "connection storm: ms until all echoed (lower is better)".into(),
        ratios: false,
        series: &SERVERS,
        groups: bursts(storm::all_echoed),
    });
    panels.push(Panel {
        title: "connection storm: clients slower than 900 ms (lower)".into(),
        ratios: false,
        series: &SERVERS,
        groups: bursts(storm::slow),
    });
    draw(&panels, machine)
}

fn group(label: String, values: Vec<Option<f64>>) -> Group {
    Group {
        label,
        values,
        target: None,
    }
}

/// netgrace's advantage on each metric; the marks are the efficiency and storm targets.
fn advantage(table: &Table) -> Panel {
    let p50 = "pingpong 64 B × 50";
    let stream = "stream 64 KiB × 10";
    let mut metrics: Vec<(String, String, Option<f64>)> = vec![
        (
            "CPU per message, pingpong × 50".into(),
            cpu_per_message(p50),
            Some(1.0 / 0.95),
        ),
        (
            "messages/s, pingpong × 1".into(),
            rate("pingpong 64 B × 1"),
            Some(1.0),
        ),
        ("messages/s, pingpong × 50".into(), rate(p50), Some(1.0)),
        (
            "messages/s, pingpong × 500".into(),
            rate("pingpong 64 B × 500"),
            Some(1.0),
        ),
        (
            "messages/s, × 10 beside 10k idle".into(),
            BESIDE.into(),
            None,
        ),
        ("stream MB/s".into(), throughput(stream), Some(1.0)),
        (
            "stream CPU per MB".into(),
            cpu_per_mb(stream),
            Some(1.0 / 0.95),
        ),
        (
            "memory per idle connection".into(),
            MEMORY.into(),
            Some(50.0),
        ),
        ("shutdown, 10 000 idle".into(), SHUTDOWN.into(), None),
    ];
    metrics.extend(BURSTS.iter().map(|burst| {
        let label = format!(
            "storm {}: until all echoed",
            storm::thousands(burst.clients)
        );
        (label, storm::all_echoed(burst.clients), Some(1.0))
    }));
    let groups = metrics
        .into_iter()
        .map(|(label, row, target)| Group {
            label,
            values: vec![
                table.advantage(&row, Kind::TokioCt),
                table.advantage(&row, Kind::TokioMt),
            ],
            target,
        })
        .collect();
    Panel {
        title: "netgrace's advantage: right of 1× is better for netgrace; marks are the targets"
            .into(),
        ratios: true,
        series: &VERSUS,
        groups,
    }
}

/// Lays the panels out: the first across the whole width, the rest two to a row.
fn draw(panels: &[Panel], machine: &str) -> String {
    let mut body = String::new();
    let mut y = 50.0;
    let (first, rest) = panels
        .split_first()
        .map_or((None, &[][..]), |(f, r)| (Some(f), r));
    if let Some(first) = first {
        y += draw_panel(&mut body, first, MARGIN, y, WIDTH - 2.0 * MARGIN) + 20.0;
    }
    let half = (WIDTH - 3.0 * MARGIN) / 2.0;
    for pair in rest.chunks(2) {
        let mut tallest: f64 = 0.0;
        for (i, panel) in pair.iter().enumerate() {
            let x = MARGIN + i as f64 * (half + MARGIN);
            tallest = tallest.max(draw_panel(&mut body, panel, x, y, half));
        }
        y += tallest + 20.0;
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{y}\" \
         viewBox=\"0 0 {WIDTH} {y}\" {FONT}>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{MARGIN}\" y=\"24\" font-size=\"16\" font-weight=\"bold\">netgrace beside tokio: \
         echo benchmark, medians</text>\n<text x=\"{MARGIN}\" y=\"40\" fill=\"#555\">{} · server \
         pinned to core 0, load generator to core 1 · cargo bench --bench echo -- compare</text>",
        escape(machine)
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

/// Draws one panel at (`x`, `y`) and returns its height.
fn draw_panel(out: &mut String, panel: &Panel, x: f64, y: f64, width: f64) -> f64 {
    let _ = writeln!(
        out,
        "<text x=\"{x}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        y + 12.0,
        escape(&panel.title)
    );
    let mut legend_x = x;
    for (name, color) in panel.series {
        let _ = writeln!(
            out,
            "<rect x=\"{legend_x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"#333\">{}</text>",
            y + 20.0,
            legend_x + 14.0,
            y + 29.0,
            escape(name)
        );
        legend_x += 24.0 + name.chars().count() as f64 * CHAR;
    }
    let longest = panel
        .groups
        .iter()
        .map(|g| g.label.chars().count())
        .max()
        .unwrap_or(0);
    let label_width = longest as f64 * CHAR + 10.0;
    let plot_x = x + label_width;
    let plot_width = width - label_width - 70.0;
    let scale = Scale::new(panel, plot_x, plot_width);
    let group_height = panel.series.len() as f64 * BAR + GROUP_GAP;
    let top = y + HEADER;
    let bottom = top + panel.groups.len() as f64 * group_height;
    scale.grid(out, top, bottom);
    for (i, group) in panel.groups.iter().enumerate() {
        let gy = top + i as f64 * group_height;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            plot_x - 6.0,
            gy + panel.series.len() as f64 * BAR / 2.0 + 4.0,
            escape(&group.label)
        );
        for (j, (value, (_, color))) in group.values.iter().zip(panel.series).enumerate() {
            if let Some(value) = value {
                scale.bar(out, *value, gy + j as f64 * BAR, color, panel.ratios);
            }
        }
        if let Some(target) = group.target {
            let tx = scale.x(target);
            let _ = writeln!(
                out,
                "<line x1=\"{tx}\" x2=\"{tx}\" y1=\"{}\" y2=\"{}\" stroke=\"#222\" stroke-width=\"2\"/>",
                gy - 2.0,
                gy + panel.series.len() as f64 * BAR
            );
        }
    }
    bottom - y + 14.0
}

/// Maps values to x: linear from 0, or log10 around 1× for ratios.
struct Scale {
    ratios: bool,
    low: f64,
    high: f64,
    left: f64,
    width: f64,
}

impl Scale {
    fn new(panel: &Panel, left: f64, width: f64) -> Scale {
        let values = panel
            .groups
            .iter()
            .flat_map(|g| g.values.iter().flatten().chain(&g.target));
        let (mut low, mut high) = if panel.ratios {
            (0.5f64, 2.0f64)
        } else {
            (0.0, 0.0)
        };
        for value in values {
            low = low.min(*value / 1.3);
            high = high.max(*value * 1.15);
        }
        if panel.ratios {
            (low, high) = (low.max(1e-3).log10(), high.log10());
        }
        let high = if high > low { high } else { low + 1.0 };
        Scale {
            ratios: panel.ratios,
            low,
            high,
            left,
            width,
        }
    }

    fn x(&self, value: f64) -> f64 {
        let v = if self.ratios {
            value.max(1e-3).log10()
        } else {
            value
        };
        self.left + (v - self.low) / (self.high - self.low) * self.width
    }

    /// Ratio panels get a line at each 1-2-5 step, the one at 1× darker.
    fn grid(&self, out: &mut String, top: f64, bottom: f64) {
        if !self.ratios {
            let _ = writeln!(
                out,
                "<line x1=\"{0}\" x2=\"{0}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#999\"/>",
                self.left
            );
            return;
        }
        for tick in [
            0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0,
        ] {
            let log = f64::log10(tick);
            if log < self.low || log > self.high {
                continue;
            }
            let (x, stroke) = (self.x(tick), if tick == 1.0 { "#666" } else { "#ddd" });
            let _ = writeln!(
                out,
                "<line x1=\"{x}\" x2=\"{x}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"{stroke}\"/>\
                 <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">{tick}×</text>",
                bottom + 13.0
            );
        }
    }

    /// A bar from the origin (0, or 1× for ratios) to `value`, labelled at its end.
    fn bar(&self, out: &mut String, value: f64, y: f64, color: &str, ratio: bool) {
        let origin = self.x(if self.ratios { 1.0 } else { 0.0 });
        let end = self.x(value);
        let (left, right) = (origin.min(end), origin.max(end));
        let text = match (ratio, value >= 10.0) {
            (true, true) => format!("{value:.0}×"),
            (true, false) => format!("{value:.2}×"),
            (false, _) => number(value),
        };
        let (tx, anchor) = if end >= origin {
            (right + 4.0, "start")
        } else {
            (left - 4.0, "end")
        };
        let _ = writeln!(
            out,
            "<rect x=\"{left}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{tx}\" y=\"{}\" text-anchor=\"{anchor}\" font-size=\"11\">{}</text>",
            y + 1.0,
            (right - left).max(1.0),
            BAR - 2.0,
            y + BAR - 2.5,
            escape(&text)
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
