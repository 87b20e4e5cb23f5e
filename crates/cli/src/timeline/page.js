"use strict";
// Draws the timeline from the page's JSON data (times in units of 0.1 ms).
(() => {
  const D = JSON.parse(document.getElementById("data").textContent);
  const U = 1e4, LH = 20, BH = 14, TOP = 26;
  const svg = document.getElementById("tl"), labels = document.getElementById("labels");
  const scroll = document.getElementById("scroll"), tip = document.getElementById("tip");
  // With a shared queue: a heading row above each node's lanes.
  const GH = 18, G = D.groups || [];
  const Y = D.lanes.map((_, i) => TOP + i * LH + G.filter((g) => g[0] <= i).length * GH);
  const LANES_H = D.lanes.length * LH + G.length * GH;
  // A row under the lanes for the stop's words (the axis' labels are above).
  const H = TOP + LANES_H + (D.stop ? 18 : 4);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ESC[c]);
  const fmt = (s) => s <= 0 ? "0" : s >= 10 ? s.toFixed(1) + " s" : s >= 1 ? s.toFixed(2) + " s"
    : s >= 0.001 ? (s * 1000).toFixed(0) + " ms" : (s * 1000).toFixed(2) + " ms";
  let scale = 1; // px per second
  const fit = () => { scale = Math.max(100, scroll.clientWidth - 24) / Math.max(D.end / U, 1e-3); };
  // A tick every 100 px or more, at 1, 2 or 5 x 10^k seconds.
  const step = () => {
    const raw = 100 / scale, p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  };

  function drawLabels() {
    const out = [];
    G.forEach((g) => out.push(`<text x="4" y="${Y[g[0]] - 5}" font-weight="bold">${esc(g[1])}</text>`));
    D.lanes.forEach((l, i) => out.push(`<text data-l="${i}" x="4" y="${Y[i] + 14}">${esc(l[0])}</text>`));
    labels.setAttribute("height", H);
    labels.innerHTML = out.join("");
  }

  function draw() {
    const x = (t) => (t / U * scale).toFixed(1);
    const W = Math.ceil(D.end / U * scale) + 40;
    const out = ['<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
      + 'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff3ee"/>'
      + '<line x1="0" y1="0" x2="0" y2="6" stroke="#eaa58f" stroke-width="2"/></pattern></defs>'];
    D.lanes.forEach((l, i) => out.push(`<rect class="lane${i % 2 ? " odd" : ""}" x="0" y="${Y[i]}" width="${W}" height="${LH}"/>`));
    G.forEach((g) => out.push(`<rect class="grp" x="0" y="${Y[g[0]] - GH}" width="${W}" height="${GH}"/>`));
    out.push(`<rect class="startup" x="0" y="${TOP}" width="${x(D.first)}" height="${LANES_H}"/>`);
    const s = step();
    for (let i = 0; i * s <= D.end / U; i++) {
      const px = (i * s * scale).toFixed(1);
      out.push(`<line class="tick" x1="${px}" x2="${px}" y1="${TOP - 5}" y2="${TOP + LANES_H}"/><text x="${px}" y="${TOP - 9}">${fmt(i * s)}</text>`);
    }
    D.gaps.forEach((g, i) => out.push(`<rect class="gap" data-g="${i}" x="${x(g[1])}" y="${Y[g[0]] + 3}" width="${x(g[2] - g[1])}" height="${BH}"/>`));
    D.bars.forEach((b, i) => {
      const [lane, start, len, k, a] = b;
      const w = Math.max(len / U * scale, 0.6).toFixed(1);
      out.push(`<rect class="b k-${D.kinds[k][0]}${a ? " a" : ""}" data-i="${i}" x="${x(start)}" y="${Y[lane] + 3}" width="${w}" height="${BH}"/>`);
      if (D.kinds[k][2]) out.push(`<text class="m" x="${x(start + len)}" y="${Y[lane] + 15}">${D.kinds[k][2]}</text>`);
    });
    D.open.forEach((o, i) => out.push(`<rect class="u" data-u="${i}" x="${x(o[1])}" y="${Y[o[0]] + 3}" width="${Math.max(o[2] / U * scale, 0.6).toFixed(1)}" height="${BH}"/>`));
    if (D.stop) {
      const px = x(D.stop[0]);
      const end = +px > W / 2 ? ' text-anchor="end"' : "";
      out.push(`<line class="stop" x1="${px}" x2="${px}" y1="${TOP - 4}" y2="${H - 2}"/><text class="stopl"${end} x="${px}" y="${H - 5}">stop: ${esc(D.stop[1])}</text>`);
    }
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.innerHTML = out.join("");
  }

  function describe(d) {
    if (d.i !== undefined) {
      const [lane, start, len, k, a, test] = D.bars[+d.i];
      return `<b>${esc(D.tests[test])}</b><br>${esc(D.kinds[k][1])}, ${fmt(len / U)}, attempt ${a + 1}`
        + `${a ? " (retry " + a + ")" : ""}<br>${esc(D.lanes[lane][0])}, ${fmt(start / U)} to ${fmt((start + len) / U)}`;
    }
    if (d.u !== undefined) {
      const [lane, start, len, test] = D.open[+d.u];
      return `<b>${esc(D.tests[test])}</b><br>started on ${esc(D.lanes[lane][0])} at ${fmt(start / U)}, no result `
        + `after ${fmt(len / U)}: the stop ended its worker (not run)`;
    }
    if (d.g !== undefined) {
      const [lane, s, e] = D.gaps[+d.g];
      return `${esc(D.lanes[lane][0])} idle ${fmt((e - s) / U)}<br>${fmt(s / U)} to ${fmt(e / U)}`;
    }
    if (d.l !== undefined) {
      const [name, n, busy, idle] = D.lanes[+d.l];
      return `${esc(name)}: ${n} attempts, busy ${fmt(busy / U)}, idle ${fmt(idle / U)}`;
    }
    return null;
  }

  function hover(e) {
    const html = describe(e.target.dataset || {});
    if (html === null) { tip.hidden = true; return; }
    tip.innerHTML = html;
    tip.hidden = false;
    tip.style.left = Math.max(0, Math.min(e.clientX + 12, innerWidth - tip.offsetWidth - 4)) + "px";
    tip.style.top = (e.clientY + 16) + "px";
  }

  svg.addEventListener("mousemove", hover);
  labels.addEventListener("mousemove", hover);
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
  const zoom = (f) => { scale *= f; draw(); };
  document.getElementById("zin").addEventListener("click", () => zoom(2));
  document.getElementById("zout").addEventListener("click", () => zoom(0.5));
  document.getElementById("zfit").addEventListener("click", () => { fit(); draw(); });
  fit();
  drawLabels();
  draw();
  // Laid out, for the benchmark's load time (navigation start to here).
  void svg.getBoundingClientRect().width;
  document.documentElement.dataset.drawnMs = performance.now().toFixed(1);
})();
