// perpsim's web view: the state pushed on /web/ws twice a second, drawn as tables and a canvas chart.
"use strict";

let selected = null;          // the market shown
let watched = null;           // the account asked for
let socket = null;
const $ = (id) => document.getElementById(id);

function time(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }

function rows(id, items, cells) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...items.map((item) => {
    const row = document.createElement("tr");
    for (const [text, cls] of cells(item)) {
      const cell = document.createElement("td");
      cell.textContent = text === null || text === undefined ? "-" : text;
      if (cls) cell.className = cls;
      row.appendChild(cell);
    }
    return row;
  }));
}

function markets(state) {
  const nav = $("markets");
  if (nav.childElementCount !== state.markets.length) {
    nav.replaceChildren(...state.markets.map((m) => {
      const button = document.createElement("button");
      button.textContent = m.symbol;
      button.dataset.symbol = m.symbol;
      button.onclick = () => { selected = m.symbol; render(lastState); };
      return button;
    }));
  }
  if (!selected) {  // the first market with prices
    const priced = state.markets.find((m) => m.mark) || state.markets[0];
    selected = priced && priced.symbol;
  }
  for (const button of nav.children) button.classList.toggle("active", button.dataset.symbol === selected);
}

function chart(market) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 40;
  ctx.clearRect(0, 0, width, height);
  const points = market.series;
  canvas.dataset.points = String(points.length);
  canvas.dataset.liquidations = String(market.liquidations.length);
  if (points.length < 2) return;
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const prices = points.flatMap((p) => [p[1], p[2], p[3]]).concat(market.liquidations.map((l) => l[1]))
    .filter((v) => v !== null);
  let low = Math.min(...prices), high = Math.max(...prices);
  if (high === low) { high += 1; low -= 1; }
  const x = (t) => pad + (width - 2 * pad) * (t - t0) / Math.max(1, t1 - t0);
  const y = (v) => height - pad / 2 - (height - pad) * (v - low) / (high - low);
  ctx.fillStyle = "#8b949e"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const v = low + (high - low) * i / 4;
    ctx.fillText(v.toFixed(2), 2, y(v) + 3);
    ctx.strokeStyle = "#1f262e"; ctx.beginPath(); ctx.moveTo(pad, y(v)); ctx.lineTo(width, y(v)); ctx.stroke();
  }
  for (const [column, colour] of [[2, "#8b949e"], [3, "#e3b341"], [1, "#58a6ff"]]) {
    ctx.strokeStyle = colour; ctx.lineWidth = column === 1 ? 1.6 : 1; ctx.beginPath();
    let started = false;
    for (const p of points) {
      if (p[column] === null) { started = false; continue; }
      if (started) ctx.lineTo(x(p[0]), y(p[column])); else ctx.moveTo(x(p[0]), y(p[column]));
      started = true;
    }
    ctx.stroke();
  }
  for (const [t, price, mode] of market.liquidations) {
    if (t < t0) continue;
    ctx.fillStyle = mode === "isolated" ? "#f85149" : "#bc8cff";
    ctx.beginPath(); ctx.arc(x(t), y(price), 3.5, 0, 2 * Math.PI); ctx.fill();
  }
}

let lastState = null;

function render(state) {
  lastState = state;
  markets(state);
  $("fund").textContent = state.insurance_fund;
  $("accounts").textContent = state.accounts;
  const market = state.markets.find((m) => m.symbol === selected);
  if (market) {
    $("symbol").textContent = market.symbol;
    $("mark").textContent = market.mark || "-";
    $("index").textContent = market.index || "-";
    $("last").textContent = market.last || "-";
    $("funding").textContent = market.funding_rate;
    $("open-interest").textContent = market.open_interest + " " + market.base;
    const depth = Math.max(market.bids.length, market.asks.length);
    const ladder = Array.from({ length: depth }, (_, i) => [market.bids[i], market.asks[i]]);
    rows("book", ladder, ([bid, ask]) => [[bid && bid[1]], [bid && bid[0], "bid"], [ask && ask[0], "ask"], [ask && ask[1]]]);
    rows("trades", market.trades, (t) => [[time(t.t)], [t.price, t.side], [t.size], [t.side, t.side]]);
    rows("funding-history", market.funding_history.slice().reverse(), (f) => [[time(f[0])], [f[1]]]);
    chart(market);
  }
  rows("liquidations", state.liquidations, (l) => [[time(l.t)], [l.account], [l.market], [l.mode, l.mode],
    [l.stage], [l.mark]]);
}

function renderAccount(account) {
  if (!account) return;
  if (account.error) {
    $("account-error").textContent = account.error;
    $("account-view").hidden = true;
    return;
  }
  $("account-error").textContent = "";
  $("account-view").hidden = false;
  $("account-view").dataset.account = account.account;
  $("balance").textContent = account.balance;
  $("available").textContent = account.available;
  $("withdrawable").textContent = account.withdrawable;
  rows("positions", account.positions, (p) => [[p.market], [p.side, p.side], [p.size], [p.mode, p.mode],
    [p.leverage + "x"], [p.entry], [p.mark], [p.unrealized_pnl], [p.margin], [p.liquidation], [p.bankruptcy]]);
  rows("orders", account.orders, (o) => [[o.id], [o.market], [o.side, o.side], [o.kind], [o.price], [o.size],
    [o.filled], [o.reduce_only ? "yes" : ""]]);
  rows("conditionals", account.conditionals, (c) => [[c.id], [c.market], [c.side, c.side], [c.condition],
    [c.trigger], [c.source], [c.kind], [c.price], [c.size]]);
  rows("fills", account.fills, (f) => [[time(f.t)], [f.market], [f.side, f.side], [f.price], [f.size], [f.role],
    [f.fee], [f.realized]]);
  rows("income", account.income, (i) => [[time(i.t)], [i.kind], [i.market], [i.amount]]);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/web/ws`);
  socket.onopen = () => {
    $("status").textContent = "live"; $("status").className = "status live";
    if (watched) socket.send(JSON.stringify({ account: watched }));
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.state) render(message.state);
    if (message.account) renderAccount(message.account);
  };
  socket.onclose = () => {
    $("status").textContent = "reconnecting"; $("status").className = "status";
    setTimeout(connect, 1000);
  };
}

$("account-form").addEventListener("submit", (event) => {
  event.preventDefault();
  watched = $("account-id").value.trim() || null;
  const url = new URL(location.href);
  if (watched) url.searchParams.set("account", watched); else url.searchParams.delete("account");
  history.replaceState(null, "", url);
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ account: watched }));
});

watched = new URLSearchParams(location.search).get("account");
if (watched) $("account-id").value = watched;
connect();
