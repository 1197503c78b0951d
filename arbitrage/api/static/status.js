// The status page: live rows from /sse/stream, rate and profit chart computed in the browser,
// component health from /health, recent exports from /exports. No build step, no CDN.
"use strict";
const MAX_ROWS = 50;
const WINDOW_S = 120;
const perSecond = new Map(); // unix second -> {count, profit}
let seen = 0;

const $ = (id) => document.getElementById(id);
const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; };
const short = (s) => (s && s.length > 12 ? s.slice(0, 5) + "…" + s.slice(-4) : s || "");

function addTransaction(id, tx) {
  seen += 1;
  const second = Math.floor(Date.now() / 1000);
  const bucket = perSecond.get(second) || { count: 0, profit: 0 };
  bucket.count += 1;
  bucket.profit += tx.net_profit_sol || 0;
  perSecond.set(second, bucket);
  const row = document.createElement("tr");
  row.className = "tx";
  row.dataset.signature = tx.signature;
  const profit = tx.net_profit_sol;
  row.append(
    cell(String(id)),
    cell((tx.block_time || "").replace("T", " ").replace("Z", "")),
    cell(short(tx.signer)),
    cell((tx.route || []).map(short).join(" → ")),
    cell((tx.dexes || []).join(", ")),
    cell(profit == null ? "–" : profit.toFixed(6), "num " + (profit > 0 ? "pos" : profit < 0 ? "neg" : "")),
  );
  const body = $("live");
  body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
}

function connect() {
  const fields = "signature,block_time,signer,route,dexes,net_profit_sol";
  const source = new EventSource("/sse/stream?fields=" + fields);
  source.onopen = () => { $("feed-state").textContent = "live"; $("feed-state").className = "pill live"; };
  source.onerror = () => { $("feed-state").textContent = "reconnecting…"; $("feed-state").className = "pill down"; };
  source.addEventListener("transaction", (event) => addTransaction(event.lastEventId, JSON.parse(event.data)));
}

function drawChart() {
  const now = Math.floor(Date.now() / 1000);
  for (const second of perSecond.keys()) if (second < now - WINDOW_S) perSecond.delete(second);
  const values = [];
  for (let s = now - WINDOW_S + 1; s <= now; s++) values.push((perSecond.get(s) || { profit: 0 }).profit);
  const max = Math.max(1e-9, ...values.map(Math.abs));
  const x = (i) => (i / (WINDOW_S - 1)) * 600;
  const y = (v) => 80 - (v / max) * 75;
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  $("chart").innerHTML =
    `<line x1="0" y1="80" x2="600" y2="80" stroke="#263040"/>` +
    `<polyline fill="none" stroke="#4cc38a" stroke-width="1.5" points="${points}"/>` +
    `<text x="4" y="12" fill="#8b98a8" font-size="10">±${max.toFixed(4)} SOL/s</text>`;
  let recent = 0;
  for (let s = now - 9; s <= now; s++) recent += (perSecond.get(s) || { count: 0 }).count;
  $("rate").textContent = (recent / 10).toFixed(1);
  $("seen").textContent = String(seen);
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

async function refresh() {
  try {
    const health = await getJson("/health");
    const body = $("health");
    body.replaceChildren(
      ...Object.entries(health.components).map(([name, c]) => {
        const row = document.createElement("tr");
        row.append(cell(name), cell(c.status, c.status), cell(c.latency_ms == null ? "" : c.latency_ms + " ms", "num"));
        return row;
      }),
    );
  } catch (e) { $("health").replaceChildren(cell("health unavailable", "unhealthy")); }
  try {
    const stats = await getJson("/stats");
    $("stored").textContent = String(stats.transactions);
    $("profit").textContent = Number(stats.net_profit_sol || 0).toFixed(3);
  } catch (e) { /* stats are optional on this page */ }
  try {
    const exports = await getJson("/exports?limit=5");
    const rows = (exports.items || []).map((job) => {
      const row = document.createElement("tr");
      row.append(cell(job.format || ""), cell(job.state, job.state === "failed" ? "unhealthy" : ""), cell(String(job.rows ?? ""), "num"));
      return row;
    });
    $("exports").replaceChildren(...(rows.length ? rows : [cell("no exports yet", "muted")]));
  } catch (e) { $("exports").replaceChildren(cell("exports unavailable", "muted")); }
}

connect();
drawChart();
refresh();
setInterval(drawChart, 1000);
setInterval(refresh, 5000);
