// sessionmesh dashboard: plain JS, no build step. Every piece of data reaches the DOM
// through textContent (never innerHTML), so a body with markup renders as text.
"use strict";

const API = "/dashboard/v1";
const RECEIPT_ORDER = { held: 0, queued: 1, delivered: 2, read: 3, answered: 4, expired: 5, rejected: 5 };
const ROW = { peer: 38, msg: 40, thread: 38 };

const S = {
  me: "human",
  skew: 0, // server clock minus ours, seconds
  awayWindow: 300,
  peers: new Map(),
  peerOrder: [],
  peersDirty: true,
  msgs: { live: [], older: [], byId: new Map(), before: null, loading: false },
  search: null, // {query, results, before, loading} while the pane shows search results
  selected: null,
  threads: new Map(),
  threadOrder: [],
  threadsDirty: true,
  locks: new Map(),
  held: new Map(),
  graph: { window: 3600, edges: new Map(), dirty: true },
  arrivals: [],
  tick: 0,
  ready: false,
};

const $ = (id) => document.getElementById(id);
const now = () => Date.now() / 1000 + S.skew;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clock(ts) {
  const d = new Date(ts * 1000);
  return d.toTimeString().slice(0, 8);
}

function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, now() - ts);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function bodyText(body) {
  return typeof body === "string" ? body : JSON.stringify(body);
}

function toText(to) {
  return Array.isArray(to) ? to.join(", ") : String(to);
}

async function api(path, options = {}) {
  const headers = { "X-Mesh-Dashboard": "1" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(API + path, {
    method: options.method || "GET",
    headers,
    credentials: "same-origin",
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = (data && data.error) || { message: `HTTP ${resp.status}` };
    throw Object.assign(new Error(err.message), { code: err.code, hint: err.hint, status: resp.status });
  }
  return data;
}

// ---------------------------------------------------------------- rendering loop
let frameQueued = false;
const dirty = new Set();
function mark(what) {
  dirty.add(what);
  if (!frameQueued) {
    frameQueued = true;
    requestAnimationFrame(drawFrame);
  }
}

function drawFrame() {
  frameQueued = false;
  const todo = Array.from(dirty);
  dirty.clear();
  for (const what of todo) DRAW[what]();
  if (S.ready && !window.__meshFirstRender) {
    window.__meshFirstRender = performance.now();
    document.body.dataset.ready = "1";
  }
}

// A list that only builds the rows in view: thousands of rows cost what thirty do.
// Rows are kept by key and rebuilt only when their item's version changes, so a new
// message at the top builds one row and moves the others.
class VList {
  constructor(root, rowHeight, render, key, version) {
    this.root = root;
    this.h = rowHeight;
    this.render = render;
    this.key = key;
    this.version = version;
    this.count = 0;
    this.get = () => null;
    this.rows = new Map(); // key -> {node, version}
    this.inner = el("div", "vinner");
    this.empty = el("div", "empty");
    root.append(this.inner);
    this.onEnd = null;
    root.addEventListener("scroll", () => this.draw(), { passive: true });
  }
  reset() {
    for (const row of this.rows.values()) row.node.remove();
    this.rows = new Map();
  }
  set(count, get) {
    this.count = count;
    this.get = get;
    this.draw();
  }
  draw() {
    const top = this.root.scrollTop;
    const height = this.root.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / this.h) - 4);
    const last = Math.min(this.count, Math.ceil((top + height) / this.h) + 4);
    this.inner.style.height = `${this.count * this.h}px`;
    const keep = new Map();
    for (let i = first; i < last; i++) {
      const item = this.get(i);
      const key = this.key(item);
      const version = this.version(item);
      let row = this.rows.get(key);
      if (row && row.version !== version) {
        row.node.remove();
        row = null;
      }
      if (!row) {
        const node = this.render(item, i);
        node.classList.add("vrow");
        node.style.height = `${this.h}px`;
        row = { node, version, top: -1 };
        this.inner.append(node);
      }
      if (row.top !== i) {
        row.node.style.top = `${i * this.h}px`;
        row.top = i;
      }
      keep.set(key, row);
      this.rows.delete(key);
    }
    for (const stale of this.rows.values()) stale.node.remove();
    this.rows = keep;
    if (this.count === 0 && this.emptyText) {
      this.empty.textContent = this.emptyText;
      if (!this.empty.isConnected) this.inner.append(this.empty);
    } else if (this.empty.isConnected) this.empty.remove();
    if (this.onEnd && this.count > 0 && last >= this.count) this.onEnd();
  }
}

// ---------------------------------------------------------------- peers
function presenceOf(peer) {
  if (peer.presence === "online") return "online";
  return now() - (peer.last_seen || 0) < S.awayWindow ? "away" : "offline";
}

function upsertPeer(name, fields) {
  const peer = S.peers.get(name) || { name, presence: "offline", meta: {}, last_seen: 0, unread: 0 };
  Object.assign(peer, fields);
  peer._v = (peer._v || 0) + 1;
  S.peers.set(name, peer);
  S.peersDirty = true;
  mark("peers");
  return peer;
}

// pair mode: the roles are in each member's meta; a stop only in the person's view
function setPair(name, pair) {
  const meta = { ...((S.peers.get(name) || {}).meta || {}) };
  if (pair) meta.pair = pair;
  else delete meta.pair;
  upsertPeer(name, pair ? { meta } : { meta, stopped_by: null });
}

function touchPeer(name, ts) {
  const peer = S.peers.get(name);
  if (!peer) {
    upsertPeer(name, { last_seen: ts, presence: "away" });
  } else if (ts > (peer.last_seen || 0)) {
    peer.last_seen = ts;
    peer._v = (peer._v || 0) + 1;
    mark("peers");
  }
}

const PRESENCE_RANK = { online: 0, away: 1, offline: 2 };
function peerOrder() {
  if (S.peersDirty) {
    const filter = $("peer-filter").value.trim().toLowerCase();
    const list = [];
    for (const p of S.peers.values()) {
      if (!filter || p.name.includes(filter) || JSON.stringify(p.meta).toLowerCase().includes(filter)) list.push(p);
    }
    list.sort((a, b) => PRESENCE_RANK[presenceOf(a)] - PRESENCE_RANK[presenceOf(b)] || (a.name < b.name ? -1 : 1));
    S.peerOrder = list;
    S.peersDirty = false;
    const names = $("peer-names");
    if (names.childElementCount !== S.peers.size) {
      const frag = document.createDocumentFragment();
      frag.append(el("option", null, "broadcast"));
      for (const name of Array.from(S.peers.keys()).sort()) {
        const opt = el("option");
        opt.value = name;
        frag.append(opt);
      }
      names.replaceChildren(frag);
    }
  }
  return S.peerOrder;
}

function renderPeer(p) {
  const presence = presenceOf(p);
  const meta = p.meta || {};
  const row = el("div", `peer ${presence}${meta.client === "human" ? " human" : ""}`);
  row.dataset.name = p.name;
  row.dataset.presence = presence;
  row.append(el("span", "dot"));
  const name = el("span", "name", p.name);
  if (meta.client) name.append(el("span", `tag${meta.client === "human" ? " human" : ""}`, meta.client));
  if (meta.role && meta.role !== meta.client) name.append(el("span", "tag", meta.role));
  const policy = p.policy || {};
  if (policy.default === "hold") name.append(el("span", "tag policy", "holds its mail"));
  if (policy.default === "refuse") name.append(el("span", "tag policy", "refuses mail"));
  const bySender = Object.entries(policy.from || {}).map(([n, v]) => `${v} ${n}`).join(", ");
  if (bySender) name.title = `inbound policy: ${bySender}`;
  if (meta.pair) name.append(el("span", "tag pair", `${meta.pair.role} with ${meta.pair.with}`));
  if (p.stopped_by) name.append(el("span", "tag stop", `stopped by ${p.stopped_by}`));
  row.append(name);
  const doing = p.activity ? ` · ${p.activity} ${ago(p.activity_since)}` : "";
  row.append(el("span", "seen", (presence === "online" ? "online" : `${presence} · ${ago(p.last_seen)}`) + doing));
  const woken = p.wakes ? `woken ${p.wakes}×` : "";
  const sub = [meta.status, meta.machine, woken].filter(Boolean).join(" · ");
  row.append(el("span", "sub", sub || (p.unread ? `${p.unread} unread` : "")));
  row.title = [p.name, meta.status, meta.machine, meta.cwd].filter(Boolean).join("\n");
  return row;
}

// ---------------------------------------------------------------- messages
function msgCount() {
  return S.msgs.live.length + S.msgs.older.length;
}
function msgAt(i) {
  const live = S.msgs.live;
  return i < live.length ? live[live.length - 1 - i] : S.msgs.older[i - live.length];
}

const KEEP_MESSAGES = 20000; // in the page; older ones page in again from the broker

function addLive(msg) {
  if (S.msgs.byId.has(msg.id)) return false;
  S.msgs.byId.set(msg.id, msg);
  S.msgs.live.push(msg);
  if (msgCount() > KEEP_MESSAGES) trimMessages(KEEP_MESSAGES * 0.75);
  return true;
}

// A page left open on a busy mesh must not grow without bound: keep the newest, and
// let the list page the rest back in (by seq) if someone scrolls that far.
function trimMessages(keep) {
  const m = S.msgs;
  const all = m.live.slice(-keep);
  for (const msg of m.older) m.byId.delete(msg.id);
  for (const msg of m.live.slice(0, m.live.length - all.length)) m.byId.delete(msg.id);
  m.live = all;
  m.older = [];
  m.before = all.length && all[0].seq ? all[0].seq : m.before;
  lastLive = all.length;
}

function setReceipt(msg, recipient, state) {
  const current = msg.receipts[recipient];
  if (current !== undefined && RECEIPT_ORDER[current] >= RECEIPT_ORDER[state]) return false;
  msg.receipts[recipient] = state;
  msg._v = (msg._v || 0) + 1;
  return true;
}

function renderReceipts(msg) {
  const box = el("span", "receipts");
  const entries = Object.entries(msg.receipts || {});
  if (entries.length <= 4) {
    for (const [name, state] of entries) {
      const chip = el("span", `receipt st-${state}`, `${name}: ${state}`);
      chip.dataset.recipient = name;
      chip.dataset.state = state;
      box.append(chip);
    }
  } else {
    const counts = {};
    for (const [, state] of entries) counts[state] = (counts[state] || 0) + 1;
    for (const state of Object.keys(RECEIPT_ORDER)) {
      if (counts[state]) box.append(el("span", `receipt st-${state}`, `${counts[state]} ${state}`));
    }
    const total = msg.recipient_count || entries.length;
    if (total > entries.length) box.append(el("span", "receipt", `of ${total}`));
  }
  return box;
}

function renderMessage(msg) {
  const row = el("div", `msg${S.selected === msg.id ? " selected" : ""}`);
  row.dataset.id = msg.id;
  const line1 = el("div", "line1");
  line1.append(el("span", "time", clock(msg.ts)));
  const who = el("span", "who");
  const from = el("span", `from${msg.from === "human" ? " human" : ""}`, msg.from);
  who.append(from, document.createTextNode(" → "), el("span", "to", toText(msg.to)));
  line1.append(who);
  if (msg.kind !== "message") line1.append(el("span", "kind", msg.status ? `${msg.kind} ${msg.status}` : msg.kind));
  if (msg.priority === "urgent") line1.append(el("span", "kind urgent", "urgent"));
  line1.append(renderReceipts(msg));
  row.append(line1);
  row.append(el("div", "body", bodyText(msg.body)));
  row.addEventListener("click", () => select(msg.id));
  return row;
}

function select(id) {
  S.selected = id;
  mark("messages");
  mark("detail");
}

function drawDetail() {
  const panel = $("detail-panel");
  const msg = S.selected && (S.msgs.byId.get(S.selected) || (S.search && S.search.byId.get(S.selected)));
  panel.hidden = !msg;
  if (!msg) return;
  const box = $("detail");
  const dl = el("dl");
  const add = (k, v) => {
    if (v === null || v === undefined || v === "") return;
    dl.append(el("dt", null, k), el("dd", null, v));
  };
  add("id", msg.id);
  add("from", msg.from);
  add("to", toText(msg.to));
  add("kind", msg.kind + (msg.status ? ` (${msg.status})` : ""));
  add("priority", msg.priority);
  add("thread", msg.thread);
  add("re", msg.re);
  add("time", new Date(msg.ts * 1000).toLocaleString());
  add("paths", (msg.paths || []).join(", "));
  if (msg.ack_required) add("ack", "required before the work starts");
  add("evidence", (msg.evidence || []).map((e) => [e.path, e.note].filter(Boolean).join(": ")).join("; "));
  const receipts = Object.entries(msg.receipts || {}).map(([n, s]) => `${n}: ${s}`).join(", ");
  add("receipts", receipts + (msg.recipient_count > Object.keys(msg.receipts || {}).length ? ` … (${msg.recipient_count})` : ""));
  const pre = el("pre", "full-body", typeof msg.body === "string" ? msg.body : JSON.stringify(msg.body, null, 2));
  box.replaceChildren(pre, dl);
}

async function loadOlder() {
  const m = S.msgs;
  if (m.loading || m.before === null || S.search) return;
  m.loading = true;
  try {
    const page = await api(`/messages?before=${m.before}&limit=200`);
    for (const msg of page.messages) {
      if (!m.byId.has(msg.id)) {
        m.byId.set(msg.id, msg);
        m.older.push(msg);
      }
    }
    m.before = page.before;
    mark("messages");
  } finally {
    m.loading = false;
  }
}

// ---------------------------------------------------------------- search
async function runSearch(query, more = false) {
  if (!more) S.search = { query, results: [], byId: new Map(), before: null, loading: false, done: false };
  const s = S.search;
  if (s.loading || s.done) return;
  s.loading = true;
  try {
    const qs = new URLSearchParams({ q: query, limit: "100" });
    if (s.before) qs.set("before", s.before);
    const page = await api(`/search?${qs}`);
    if (S.search !== s) return;
    for (const msg of page.messages) {
      s.results.push(msg);
      s.byId.set(msg.id, msg);
    }
    s.before = page.before;
    s.done = page.before === null;
  } finally {
    s.loading = false;
  }
  $("search-banner").hidden = false;
  $("search-text").textContent = `${s.results.length}${s.done ? "" : "+"} result(s) for “${query}”`;
  $("messages").scrollTop = more ? $("messages").scrollTop : 0;
  mark("messages");
}

function clearSearch() {
  S.search = null;
  $("search").value = "";
  $("search-banner").hidden = true;
  mark("messages");
}

// ---------------------------------------------------------------- threads
function upsertThread(t) {
  const old = S.threads.get(t.id);
  if (old && old.updated_at > t.updated_at) return;
  S.threads.set(t.id, t);
  S.threadsDirty = true;
  mark("threads");
}

function renderThread(t) {
  const row = el("div", "thread");
  row.dataset.id = t.id;
  const line1 = el("div", "line1");
  line1.append(el("span", "tid", t.id.slice(0, 8) + "…"));
  line1.append(el("span", `state ${t.state}`, t.state));
  line1.append(el("span", "turns muted", `${t.turns} turn${t.turns === 1 ? "" : "s"}`));
  line1.append(el("span", "muted", ago(t.updated_at)));
  row.append(line1);
  row.append(el("div", "people", (t.participants || []).join(" · ")));
  row.title = t.id;
  row.addEventListener("click", () => {
    $("search").value = "";
    select(t.id);
  });
  return row;
}

// ---------------------------------------------------------------- locks and held
function lockKey(l) {
  return `${l.resource}\u0000${l.holder}`;
}

function drawLocks() {
  const box = $("locks");
  const list = Array.from(S.locks.values()).sort((a, b) => a.expires_at - b.expires_at);
  $("lock-count").textContent = list.length ? `(${list.length})` : "";
  const frag = document.createDocumentFragment();
  for (const l of list.slice(0, 200)) {
    const row = el("div", "lock");
    row.dataset.resource = l.resource;
    row.dataset.holder = l.holder;
    const left = l.expires_at - now();
    const cd = el("span", `countdown${left < 10 ? " soon" : ""}`, left > 0 ? `${Math.ceil(left)}s` : "expiring…");
    row.append(cd, el("div", "res", l.resource));
    const who = `${l.holder}${l.exclusive === false ? " (shared)" : ""}${l.reason ? " — " + l.reason : ""}`;
    row.append(el("div", "muted", who));
    frag.append(row);
  }
  if (!list.length) frag.append(el("div", "empty", "no locks held"));
  box.replaceChildren(frag);
}

function drawHeld() {
  const box = $("held");
  const list = Array.from(S.held.values()).sort((a, b) => a.ts - b.ts);
  $("held-count").textContent = list.length ? `(${list.length})` : "";
  const frag = document.createDocumentFragment();
  for (const m of list.slice(0, 200)) {
    const row = el("div", "held");
    row.dataset.id = m.id;
    row.append(el("div", "who", `${m.from} → ${toText(m.to)}`));
    if (m.held_for) row.append(el("div", "muted", `for ${m.held_for.join(", ")}`));
    if (m.match) row.append(el("div", "muted reason", `asks for: ${m.match}`));
    row.append(el("div", "body", bodyText(m.body)));
    const approve = el("button", "approve", "Approve");
    approve.type = "button";
    approve.addEventListener("click", () => decide("approve", m.id));
    const reject = el("button", "reject", "Reject");
    reject.type = "button";
    reject.addEventListener("click", () => decide("reject", m.id));
    row.append(approve, document.createTextNode(" "), reject);
    frag.append(row);
  }
  if (!list.length) frag.append(el("div", "empty", "nothing held"));
  box.replaceChildren(frag);
}

async function refreshHeld() {
  const data = await api("/held");
  S.held = new Map(data.messages.map((m) => [m.id, m]));
  mark("held");
}

async function decide(op, id) {
  try {
    await api(`/${op}`, { method: "POST", body: { ids: [id] } });
    S.held.delete(id);
    mark("held");
  } catch (err) {
    alert(`${op} failed: ${err.message}`);
  }
}

// ---------------------------------------------------------------- graph
function edgeAdd(from, to, n) {
  const key = `${from}\u0000${to}`;
  S.graph.edges.set(key, (S.graph.edges.get(key) || 0) + n);
  S.graph.dirty = true;
}

async function loadGraph() {
  const g = S.graph;
  const data = await api(`/graph?window=${g.window}`);
  g.edges = new Map();
  for (const e of data.edges) edgeAdd(e.from, e.to, e.count);
  mark("graph");
}

function drawGraph() {
  const canvas = $("graph");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 360;
  const h = Math.round((w * 320) / 360);
  if (canvas.width !== Math.round(w * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // the busiest nodes only: a circle of 1,000 names would be unreadable
  const weight = new Map();
  for (const [key, n] of S.graph.edges) {
    const [a, b] = key.split("\u0000");
    weight.set(a, (weight.get(a) || 0) + n);
    weight.set(b, (weight.get(b) || 0) + n);
  }
  const nodes = Array.from(weight.entries()).sort((x, y) => y[1] - x[1]).slice(0, 18).map((x) => x[0]).sort();
  let maxWeight = 1;
  for (const name of nodes) maxWeight = Math.max(maxWeight, weight.get(name));
  if (!nodes.length) {
    ctx.fillStyle = "#6b7382";
    ctx.font = "13px system-ui";
    ctx.fillText("no messages in this window", 20, 30);
    return;
  }
  const cx = w / 2, cy = h / 2, r = Math.min(w, h) / 2 - 46;
  const pos = new Map();
  nodes.forEach((name, i) => {
    const a = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
    pos.set(name, [cx + r * Math.cos(a), cy + r * Math.sin(a), a]);
  });
  let max = 1;
  for (const n of S.graph.edges.values()) max = Math.max(max, n);
  ctx.lineCap = "round";
  for (const [key, n] of S.graph.edges) {
    const [a, b] = key.split("\u0000");
    const pa = pos.get(a), pb = pos.get(b);
    if (!pa || !pb || a === b) continue;
    const width = 1 + 6 * (Math.log(1 + n) / Math.log(1 + max));
    // bend toward the centre, so a→b and b→a are two separate curves
    const mx = (pa[0] + pb[0]) / 2, my = (pa[1] + pb[1]) / 2;
    const dx = pb[0] - pa[0], dy = pb[1] - pa[1];
    const len = Math.hypot(dx, dy) || 1;
    const qx = mx - (dy / len) * len * 0.15, qy = my + (dx / len) * len * 0.15;
    ctx.strokeStyle = `rgba(43,108,176,${0.25 + 0.6 * (n / max)})`;
    ctx.lineWidth = width;
    ctx.beginPath();
    ctx.moveTo(pa[0], pa[1]);
    ctx.quadraticCurveTo(qx, qy, pb[0], pb[1]);
    ctx.stroke();
    // arrowhead near the target
    const t = 0.85;
    const ax = (1 - t) * (1 - t) * pa[0] + 2 * (1 - t) * t * qx + t * t * pb[0];
    const ay = (1 - t) * (1 - t) * pa[1] + 2 * (1 - t) * t * qy + t * t * pb[1];
    const ang = Math.atan2(pb[1] - ay, pb[0] - ax);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    ctx.moveTo(ax + 6 * Math.cos(ang), ay + 6 * Math.sin(ang));
    ctx.lineTo(ax - 5 * Math.cos(ang - 0.6), ay - 5 * Math.sin(ang - 0.6));
    ctx.lineTo(ax - 5 * Math.cos(ang + 0.6), ay - 5 * Math.sin(ang + 0.6));
    ctx.fill();
    if (S.graph.edges.size <= 30) {
      ctx.fillStyle = "#2a4365";
      ctx.font = "10px system-ui";
      ctx.fillText(String(n), qx * 0.5 + mx * 0.5 + 2, qy * 0.5 + my * 0.5 - 2);
    }
  }
  ctx.font = "11px system-ui";
  for (const name of nodes) {
    const [x, y, a] = pos.get(name);
    const peer = S.peers.get(name);
    const special = name === "broadcast" || name.startsWith("#");
    const human = peer && peer.meta && peer.meta.client === "human";
    ctx.fillStyle = special ? "#d69e2e" : human ? "#805ad5" : peer && presenceOf(peer) === "online" ? "#1f9d55" : "#718096";
    ctx.beginPath();
    ctx.arc(x, y, 3 + 6 * Math.sqrt(weight.get(name) / maxWeight), 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = "#1d2330";
    const right = Math.cos(a) >= 0;
    ctx.textAlign = right ? "left" : "right";
    const label = name.length > 16 ? name.slice(0, 15) + "…" : name;
    ctx.fillText(label, x + (right ? 12 : -12), y + 4);
  }
  ctx.textAlign = "left";
}

// ---------------------------------------------------------------- messages to the person
// What reaches the peer `human` is read once it is on a visible page.
const toRead = new Set();
let readTimer = null;
function noteForHuman(msg) {
  const state = msg.receipts && msg.receipts[S.me];
  if (state === "queued" || state === "delivered") {
    toRead.add(msg.id);
    if (!readTimer) readTimer = setTimeout(flushRead, 300);
  }
}

function flushRead() {
  readTimer = null;
  if (document.visibilityState !== "visible") {
    readTimer = setTimeout(flushRead, 1000);
    return;
  }
  const ids = Array.from(toRead).slice(0, 500);
  ids.forEach((id) => toRead.delete(id));
  if (ids.length) api("/read", { method: "POST", body: { ids } }).catch(() => {});
  if (toRead.size) readTimer = setTimeout(flushRead, 300);
}

// ---------------------------------------------------------------- events from the broker
function applyEvent(ev) {
  switch (ev.event) {
    case "message": {
      const msg = { ...ev.message, seq: ev.seq, receipts: {}, recipient_count: ev.recipient_count };
      for (const r of ev.recipients || []) msg.receipts[r] = ev.state || "queued";
      if (addLive(msg)) {
        noteForHuman(msg);
        S.arrivals.push(ev.ts);
        touchPeer(msg.from, ev.ts);
        const to = msg.to;
        for (const t of Array.isArray(to) ? to : [to]) edgeAdd(msg.from, t, 1);
        mark("messages");
        mark("graph");
      }
      break;
    }
    case "receipt": {
      const msg = S.msgs.byId.get(ev.id);
      if (msg && setReceipt(msg, ev.recipient, ev.state)) {
        mark("messages");
        if (S.selected === ev.id) mark("detail");
      }
      if (ev.state === "delivered" || ev.state === "read") touchPeer(ev.recipient, ev.ts);
      if (ev.state !== "held" && S.held.has(ev.id)) {
        S.held.delete(ev.id);
        mark("held");
      }
      break;
    }
    case "held": {
      // the message itself came just before, in this batch or an earlier one
      const msg = S.msgs.byId.get(ev.id);
      if (msg) S.held.set(ev.id, { ...msg, held_for: ev.recipients, match: ev.match });
      else refreshHeld().catch(() => {});
      mark("held");
      break;
    }
    case "approved":
    case "rejected":
      S.held.delete(ev.id);
      mark("held");
      break;
    case "peer_joined":
      upsertPeer(ev.name, { presence: "online", last_seen: ev.ts, connected_since: ev.ts, ...(ev.meta ? { meta: ev.meta } : {}) });
      break;
    case "peer_left":
      upsertPeer(ev.name, { presence: "away", last_seen: ev.ts, connected_since: null });
      break;
    case "peer_updated":
      upsertPeer(ev.name, { meta: ev.meta, last_seen: ev.ts });
      break;
    case "peer_policy":
      upsertPeer(ev.name, { policy: ev.policy });
      break;
    case "pair_started":
    case "pair_swapped":
      setPair(ev.grip, { with: ev.guard, role: "grip", since: ev.ts });
      setPair(ev.guard, { with: ev.grip, role: "guard", since: ev.ts });
      break;
    case "pair_ended":
      for (const member of ev.members) setPair(member, null);
      break;
    case "pair_intercepted":
      if (ev.urgent) upsertPeer(ev.grip, { stopped_by: ev.guard });
      break;
    case "pair_acked":
      upsertPeer(ev.grip, { stopped_by: null });
      break;
    case "peer_activity":
      upsertPeer(ev.name, { activity: ev.activity, activity_since: ev.ts, last_seen: ev.ts });
      break;
    case "peer_woken":
      upsertPeer(ev.name, { wakes: ((S.peers.get(ev.name) || {}).wakes || 0) + 1, last_seen: ev.ts });
      break;
    case "lock_granted":
    case "lock_renewed":
      S.locks.set(lockKey(ev), ev);
      mark("locks");
      break;
    case "lock_released":
    case "lock_expired":
      S.locks.delete(lockKey(ev));
      mark("locks");
      break;
    case "thread":
      upsertThread(ev.thread);
      break;
    case "thread_closed": {
      const t = S.threads.get(ev.thread);
      if (t) upsertThread({ ...t, state: "closed", updated_at: ev.ts });
      break;
    }
    default:
      break;
  }
}

// ---------------------------------------------------------------- state and feed
async function loadState() {
  const st = await api("/state?limit=200");
  S.skew = st.now - Date.now() / 1000;
  S.awayWindow = st.away_window;
  S.peers = new Map();
  for (const p of st.peers) S.peers.set(p.name, p);
  S.peersDirty = true;
  S.msgs = { live: [], older: [], byId: new Map(), before: st.before, loading: false };
  S.me = st.me;
  for (const m of st.messages) {
    S.msgs.byId.set(m.id, m);
    S.msgs.older.push(m);
    noteForHuman(m);
  }
  S.threads = new Map();
  for (const t of st.threads) S.threads.set(t.id, t);
  // a request nobody has answered yet has no thread row: show it as a first turn
  for (const m of st.messages) {
    if (m.kind === "request" && m.thread === m.id && !S.threads.has(m.id)) {
      const to = Array.isArray(m.to) ? m.to : [m.to];
      S.threads.set(m.id, { id: m.id, state: "open", turns: 1, participants: [m.from, ...to], created_at: m.ts, updated_at: m.ts });
    }
  }
  S.threadsDirty = true;
  S.locks = new Map(st.locks.map((l) => [lockKey(l), l]));
  S.held = new Map(st.held.map((m) => [m.id, m]));
  for (const what of ["peers", "messages", "threads", "locks", "held", "detail"]) mark(what);
  S.ready = true;
  loadGraph().catch(() => {});
}

let socket = null;
let backoff = 250;
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${API}/feed`);
  socket = ws;
  let buffered = [];
  let loaded = false;
  ws.onmessage = async (e) => {
    const frame = JSON.parse(e.data);
    if (frame.op === "hello") {
      setConn("live", "live");
      backoff = 250;
      try {
        await loadState();
      } catch (err) {
        setConn("down", `error: ${err.message}`);
        return;
      }
      loaded = true;
      for (const ev of buffered) applyEvent(ev);
      buffered = [];
    } else if (frame.op === "events") {
      if (loaded) frame.events.forEach(applyEvent);
      else buffered.push(...frame.events);
    } else if (frame.op === "resync") {
      loaded = false;
      buffered = [];
      loadState().then(() => (loaded = true));
    }
  };
  ws.onclose = async () => {
    if (socket !== ws) return;
    setConn("down", "reconnecting…");
    try {
      const probe = await fetch(`${API}/state?limit=1`, { credentials: "same-origin" });
      if (probe.status === 401) {
        setConn("down", "logged out: run 'mesh dashboard' for a new link");
        return; // a restarted broker forgot the session: retrying cannot help
      }
    } catch (err) {
      // the broker is away: keep trying
    }
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
}

function setConn(cls, text) {
  const c = $("conn");
  c.className = `conn ${cls}`;
  c.textContent = text;
}

// ---------------------------------------------------------------- panels
let peerList, msgList, threadList;
let lastGraph = 0;
let msgMode = "live";
let graphTimer = null;
const DRAW = {
  peers() {
    const order = peerOrder();
    peerList.set(order.length, (i) => order[i]);
    let online = 0;
    for (const p of S.peers.values()) if (p.presence === "online") online++;
    $("peer-count").textContent = `${online} online / ${S.peers.size}`;
    $("counts").textContent = `${online} online · ${S.peers.size} peers`;
  },
  messages() {
    const mode = S.search ? `search:${S.search.query}` : "live";
    if (mode !== msgMode) {
      msgList.reset(); // the same id may stand for another object in the other list
      msgMode = mode;
    }
    if (S.search) {
      const res = S.search.results;
      msgList.emptyText = "no stored message matches";
      msgList.set(res.length, (i) => res[i]);
    } else {
      msgList.emptyText = "no messages yet";
      msgList.set(msgCount(), msgAt);
    }
    $("msg-count").textContent = S.search ? "" : `(${msgCount()}${S.msgs.before !== null ? "+" : ""})`;
  },
  threads() {
    if (S.threadsDirty) {
      S.threadOrder = Array.from(S.threads.values()).sort((a, b) => b.updated_at - a.updated_at);
      S.threadsDirty = false;
    }
    const order = S.threadOrder;
    threadList.set(order.length, (i) => order[i]);
    $("thread-count").textContent = order.length ? `(${order.length})` : "";
  },
  locks: drawLocks,
  held: drawHeld,
  detail: drawDetail,
  graph() {
    // at most twice a second: a busy mesh changes the counts on every frame
    const wait = lastGraph + 500 - performance.now();
    if (wait > 0) {
      if (!graphTimer) graphTimer = setTimeout(() => ((graphTimer = null), mark("graph")), wait);
      return;
    }
    lastGraph = performance.now();
    drawGraph();
    S.graph.dirty = false;
  },
};

// keep the rows the reader is looking at in place while new ones arrive on top
let lastLive = 0;
function anchorMessages() {
  const box = $("messages");
  const added = S.msgs.live.length - lastLive;
  lastLive = S.msgs.live.length;
  if (!S.search && added > 0 && box.scrollTop > 0) box.scrollTop += added * ROW.msg;
}

function sendMessage(broadcast) {
  const to = broadcast ? "broadcast" : $("to").value.trim();
  const body = $("body").value;
  const out = $("send-result");
  if (!to || !body.trim()) {
    out.textContent = "say who to, and what";
    return;
  }
  out.textContent = "sending…";
  api("/send", { method: "POST", body: { to, body, priority: $("urgent").checked ? "urgent" : "normal" } })
    .then((r) => {
      const detail = Object.entries(r.statuses || {}).map(([n, s]) => `${n}: ${s}`).join(", ");
      const reason = r.reason ? ` (${r.reason.message})` : r.reasons ? ` (${Object.values(r.reasons).map((x) => x.message).join("; ")})` : "";
      out.textContent = `${r.status}${detail && r.status === "sent" ? "" : detail ? " — " + detail : ""}${r.status === "sent" ? ` to ${r.recipients}` : ""}${reason}`;
      out.dataset.status = r.status;
      if (r.status !== "denied" && r.status !== "refused") $("body").value = "";
    })
    .catch((err) => {
      out.textContent = `failed: ${err.message}`;
      out.dataset.status = "error";
    });
}

function init() {
  // a row's version: what it shows; S.tick moves every second for the "3s ago" texts
  peerList = new VList($("peers"), ROW.peer, renderPeer, (p) => p.name, (p) => `${p._v || 0}:${S.tick}`);
  peerList.emptyText = "no peers yet";
  msgList = new VList($("messages"), ROW.msg, renderMessage, (m) => m.id, (m) => `${m._v || 0}:${S.selected === m.id}`);
  msgList.onEnd = () => {
    if (S.search) {
      if (!S.search.done) runSearch(S.search.query, true);
    } else loadOlder();
  };
  threadList = new VList($("threads"), ROW.thread, renderThread, (t) => t.id, (t) => `${t.updated_at}:${t.state}:${t.turns}:${S.tick}`);
  threadList.emptyText = "no threads yet";
  const origMessages = DRAW.messages;
  DRAW.messages = () => {
    anchorMessages();
    origMessages();
  };

  $("peer-filter").addEventListener("input", () => {
    S.peersDirty = true;
    $("peers").scrollTop = 0;
    mark("peers");
  });
  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    sendMessage(false);
  });
  $("broadcast").addEventListener("click", () => sendMessage(true));
  $("body").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      sendMessage(false);
    }
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("search").value.trim();
    if (q) runSearch(q).catch((err) => ($("search-text").textContent = `search failed: ${err.message}`));
    else clearSearch();
  });
  $("search-clear").addEventListener("click", clearSearch);
  $("detail-close").addEventListener("click", () => select(null));
  $("window").addEventListener("change", (e) => {
    S.graph.window = Number(e.target.value);
    loadGraph().catch(() => {});
  });
  window.addEventListener("resize", () => ["peers", "messages", "threads", "graph"].forEach(mark));

  // clocks: countdowns and "seen 3s ago" move every second; the graph window slides
  setInterval(() => {
    S.tick += 1;
    mark("threads");
    mark("locks");
    S.peersDirty = true;
    mark("peers");
    const cutoff = now() - 5;
    S.arrivals = S.arrivals.filter((t) => t >= cutoff);
    $("rate").textContent = `${(S.arrivals.length / 5).toFixed(1)} msg/s`;
  }, 1000);
  setInterval(() => loadGraph().catch(() => {}), 15000);
  connect();
}

document.addEventListener("DOMContentLoaded", init);
