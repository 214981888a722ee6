//! `GET /`: a live page drawn from the pipeline's graph, refreshed from `/stats` once a
//! second. Plain HTML, CSS and JS served by the binary: no CDN, works offline.

use std::fmt::Write;

use pipeline_core::graph::Graph;
use pipeline_core::stats::Kind;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Source => "source",
        Kind::Stage => "stage",
        Kind::Router => "router",
        Kind::Sink => "sink",
        Kind::DeadLetter => "dead letter",
    }
}

/// One box per element: name, kind and the fields the script fills in.
fn node(out: &mut String, name: &str, kind_name: &str) {
    let name = escape(name);
    let _ = write!(
        out,
        r#"<section class="node" id="node-{name}"><h2>{name}</h2><p class="kind">{kind_name}</p><dl>"#
    );
    for (field, label) in [
        ("received", "received"),
        ("emitted", "emitted"),
        ("filtered", "filtered"),
        ("errors", "errors"),
        ("in_flight", "in flight"),
        ("queue", "queue"),
        ("retries", "retries"),
        ("breaker", "breaker"),
    ] {
        let _ = write!(out, r#"<dt>{label}</dt><dd data-field="{field}">-</dd>"#);
    }
    out.push_str("</dl></section>");
}

/// The page for `graph`: the elements in build order, joined by their edges (capacity
/// and overflow policy), with the dead-letter sink apart.
pub(crate) fn render(graph: &Graph) -> String {
    let mut chain = String::new();
    let mut dead = String::new();
    for n in graph.nodes() {
        if n.kind == Kind::DeadLetter {
            node(&mut dead, &n.name, kind(n.kind));
            continue;
        }
        if let Some(e) = graph.edges().iter().find(|e| e.to == n.id) {
            let _ = write!(
                chain,
                r#"<div class="edge">&#8594;<small>{} {}</small></div>"#,
                e.capacity,
                escape(&e.when_full)
            );
        }
        node(&mut chain, &n.name, kind(n.kind));
    }
    PAGE.replace("{chain}", &chain).replace("{dead}", &dead)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pipeline service</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; background: #f6f7f9; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
#summary { margin: 0 0 20px; color: #555; }
.chain { display: flex; align-items: center; flex-wrap: wrap; gap: 4px; }
.node { background: #fff; border: 2px solid #4a78c2; border-radius: 8px; padding: 8px 12px; min-width: 130px; }
.node h2 { font-size: 15px; margin: 0; }
.node .kind { margin: 0 0 6px; color: #777; font-size: 12px; }
.node dl { display: grid; grid-template-columns: auto auto; gap: 1px 10px; margin: 0; }
.node dt { color: #666; } .node dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
.node.open { border-color: #c24a4a; } .node.half_open { border-color: #d9a400; }
.edge { display: flex; flex-direction: column; align-items: center; font-size: 22px; color: #4a78c2; }
.edge small { font-size: 11px; color: #777; }
.dead { margin-top: 20px; display: flex; }
.dead .node { border-color: #999; border-style: dashed; }
</style>
</head>
<body>
<h1>pipeline <code>service</code></h1>
<p id="summary">waiting for /stats&hellip;</p>
<div class="chain">{chain}</div>
<div class="dead">{dead}</div>
<script>
"use strict";
function set(box, field, value) {
  const cell = box.querySelector('[data-field="' + field + '"]');
  if (cell) cell.textContent = String(value);
}
async function refresh() {
  try {
    const response = await fetch("/stats", { cache: "no-store" });
    const stats = await response.json();
    document.getElementById("summary").textContent =
      "up " + stats.uptime.toFixed(1) + " s, " + stats.emitted + " emitted, " +
      stats.finished + " finished, " + stats.in_flight + " in flight";
    for (const s of stats.stages) {
      const box = document.getElementById("node-" + s.name);
      if (!box) continue;
      set(box, "received", s.received);
      set(box, "emitted", s.emitted);
      set(box, "filtered", s.filtered);
      set(box, "errors", s.errors);
      set(box, "in_flight", s.in_flight);
      set(box, "queue", s.queue_depth + " / " + s.capacity);
      set(box, "retries", s.retries);
      set(box, "breaker", s.breaker || "none");
      box.className = "node " + (s.breaker || "");
    }
  } catch (e) {
    document.getElementById("summary").textContent = "stats unavailable: " + e;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"#;
