'use strict';
// The ringkv dashboard. Everything comes from the node that served this page
// (/cluster, /ring, /stats?cluster=true, /kv/...): no other host is ever asked.
// Data is put into the page with textContent only, never parsed as HTML.

const TOKEN_KEY = 'ringkv.api-token';
const POLL_MS = 1000;        // /cluster and /stats
const RING_POLL_MS = 5000;   // /ring changes only with membership
const HISTORY_S = 120;       // seconds of chart history
const PALETTE = ['#2450b2', '#c2410c', '#15803d', '#7e22ce', '#b91c1c', '#0e7490', '#a16207', '#be185d'];

const view = {
  cluster: null, clusterError: null, clusterAt: 0,
  ring: null,
  stats: null, statsError: null,
  history: new Map(),   // node id -> [{t, ops, p99}]
  colors: new Map(),    // node id -> colour, stable for the page's life
  firstRender: false,
};

// ---- talking to the node ---------------------------------------------------

let tokenAsked = null; // one prompt at a time, whoever hit the 401 first

function askToken(refused) {
  if (!tokenAsked) {
    tokenAsked = new Promise((resolve) => {
      const form = byId('token-form');
      byId('token-label').textContent = refused
        ? 'That token was refused. Enter an API token of this cluster:'
        : 'This node asks for an API token (--api-token-file):';
      form.hidden = false;
      byId('token-input').focus();
      form.onsubmit = (event) => {
        event.preventDefault();
        const token = byId('token-input').value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        byId('token-input').value = '';
        form.hidden = true;
        tokenAsked = null;
        resolve();
      };
    });
  }
  return tokenAsked;
}

// fetch() on this origin with the bearer token, asking for one on a 401.
async function call(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set('Authorization', 'Bearer ' + token);
    const response = await fetch(path, { ...options, headers, cache: 'no-store' });
    if (response.status !== 401) return response;
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken(Boolean(token));
  }
}

async function callJson(path) {
  const response = await call(path);
  if (!response.ok) throw new Error(await describeError(response));
  return response.json();
}

async function describeError(response) {
  let text = 'HTTP ' + response.status;
  try {
    const body = await response.json();
    if (body.error) text += ' ' + body.error + (body.message ? ': ' + body.message : '');
  } catch (_) { /* not JSON */ }
  return text;
}

// Polls `what` every `period` ms, the next call only after the last one ended.
function poll(period, what) {
  const tick = async () => {
    try { await what(); } finally { setTimeout(tick, period); }
  };
  tick();
}

async function pollCluster() {
  try {
    view.cluster = await callJson('/cluster');
    view.clusterError = null;
    view.clusterAt = Date.now();
  } catch (e) {
    view.clusterError = e.message || String(e);
  }
  render();
}

async function pollRing() {
  try { view.ring = await callJson('/ring'); } catch (_) { /* the banner says it */ }
  render();
}

async function pollStats() {
  try {
    view.stats = await callJson('/stats?cluster=true');
    view.statsError = null;
    const now = Date.now();
    for (const node of view.stats.nodes) {
      const s = node.stats;
      pushHistory(node.id, {
        t: now,
        ops: s ? s.reads_per_s + s.writes_per_s : null,
        p99: s && s.p99_ms != null ? s.p99_ms : null,
      });
    }
  } catch (e) {
    view.statsError = e.message || String(e);
  }
  render();
}

function pushHistory(id, point) {
  if (!view.history.has(id)) view.history.set(id, []);
  const points = view.history.get(id);
  points.push(point);
  while (points.length && points[0].t < point.t - HISTORY_S * 1000) points.shift();
}

// ---- rendering -------------------------------------------------------------

function byId(id) { return document.getElementById(id); }

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('data-')) node.setAttribute(name, value);
    else if (name === 'style') node.setAttribute('style', value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child == null) continue;
    node.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
  }
  return node;
}

function badge(text) { return el('span', { class: 'badge ' + text }, text); }

function fixed(x, digits) { return x == null ? '—' : Number(x).toFixed(digits); }

function bytes(n) {
  if (n == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function colorOf(id) {
  if (!view.colors.has(id)) view.colors.set(id, PALETTE[view.colors.size % PALETTE.length]);
  return view.colors.get(id);
}

function render() {
  renderHeader();
  if (view.cluster) {
    renderMembers();
    renderHints();
    renderAntiEntropy();
    renderTransfers();
  }
  renderCharts();
  if (!view.firstRender && view.cluster && view.ring && view.stats) {
    view.firstRender = true;
    // From navigation start to the first frame with every table filled in.
    window.ringkvFirstRenderMs = Math.round(performance.now());
    document.body.dataset.ready = 'true';
    byId('render-time').textContent = 'first render ' + window.ringkvFirstRenderMs + ' ms after navigation';
  }
}

function renderHeader() {
  const c = view.cluster;
  if (c) {
    byId('node-id').textContent = c.node;
    byId('quorum').textContent = 'n=' + c.n + ' r=' + c.r + ' w=' + c.w;
    document.title = 'ringkv · ' + c.node;
  }
  byId('updated').textContent = view.clusterAt ? 'updated ' + new Date(view.clusterAt).toLocaleTimeString() : '';
  const banner = byId('banner');
  const problems = [];
  if (view.clusterError) {
    problems.push('This node is not answering (' + view.clusterError + ').' +
      (view.clusterAt ? ' The figures below are from ' + new Date(view.clusterAt).toLocaleTimeString() + '; retrying every second.' : ' Retrying every second.'));
  } else if (view.statsError) {
    problems.push('Live figures unavailable: ' + view.statsError);
  }
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(' ');
  byId('main').classList.toggle('stale', Boolean(view.clusterError));
}

function statsOf(id) {
  return view.stats ? view.stats.nodes.find((n) => n.id === id) : undefined;
}

function renderMembers() {
  const owners = new Map(((view.ring && view.ring.owners) || []).map((o) => [o.id, o]));
  const partitions = view.ring ? view.ring.partitions : 0;
  const rows = [...view.cluster.members].sort((a, b) => a.id.localeCompare(b.id)).map((m) => {
    const owner = owners.get(m.id);
    const entry = statsOf(m.id);
    const s = entry && entry.stats;
    const held = s ? Object.values(s.hints_pending).reduce((a, b) => a + b, 0) : null;
    const share = owner && partitions ? owner.home_partitions / partitions : 0;
    const ownership = owner
      ? el('td', { class: 'ownership' }, owner.primary_partitions + ' / ' + owner.home_partitions,
        el('span', { class: 'bar', style: 'width:' + Math.round(share * 60) + 'px' }))
      : el('td', null, '—');
    let statsCell;
    if (s) statsCell = el('td', { class: 'stats-state' }, 'ok');
    else if (entry) statsCell = el('td', { class: 'stats-state error' }, entry.error || 'no figures');
    else statsCell = el('td', { class: 'stats-state' }, '…');
    return el('tr', { class: m.state, 'data-member': m.id },
      el('td', { class: 'id' }, el('b', null, m.id)),
      el('td', { class: 'liveness' }, badge(m.state)),
      el('td', { class: 'ring-state' }, badge(m.ring || 'member')),
      el('td', null, m.http),
      ownership,
      el('td', { class: 'num reads' }, s ? fixed(s.reads_per_s, 1) : '—'),
      el('td', { class: 'num writes' }, s ? fixed(s.writes_per_s, 1) : '—'),
      el('td', { class: 'num p99' }, s ? fixed(s.p99_ms, 2) : '—'),
      el('td', { class: 'num hints-held' }, held == null ? '—' : held),
      el('td', { class: 'num' }, s && s.storage ? bytes(s.storage.sst_bytes + s.storage.memtable_bytes) : '—'),
      statsCell);
  });
  byId('members').tBodies[0].replaceChildren(...rows);
}

function renderHints() {
  // Every live node's hints, summed per owner; the serving node's own if the
  // others' are not in yet.
  const owners = new Map();
  const add = (holder, pending) => {
    for (const [owner, count] of Object.entries(pending || {})) {
      if (!count) continue;
      if (!owners.has(owner)) owners.set(owner, { total: 0, holders: [] });
      const o = owners.get(owner);
      o.total += count;
      o.holders.push(holder + ' ' + count);
    }
  };
  let missing = [];
  if (view.stats) {
    for (const n of view.stats.nodes) {
      if (n.stats) add(n.id, n.stats.hints_pending);
      else if (n.state !== 'left') missing.push(n.id);
    }
  } else {
    add(view.cluster.node, view.cluster.hints.pending);
  }
  const rows = [...owners.entries()].sort().map(([owner, o]) =>
    el('tr', { 'data-owner': owner }, el('td', null, owner), el('td', { class: 'num' }, o.total), el('td', null, o.holders.join(', '))));
  byId('hints').tBodies[0].replaceChildren(...rows);
  let note = rows.length ? '' : 'No hints pending.';
  if (missing.length) note += (note ? ' ' : '') + 'Not counted: ' + missing.join(', ') + ' (no figures).';
  byId('hints-note').textContent = note;
}

function renderAntiEntropy() {
  const ae = view.cluster.anti_entropy;
  if (!ae) { byId('ae-summary').textContent = 'Not reported by this node.'; return; }
  byId('ae-summary').textContent = (ae.interval_ms == null
    ? 'Off on this node.'
    : 'Every ' + (ae.interval_ms / 1000) + ' s on ' + view.cluster.node + ': ' + ae.rounds + ' rounds') +
    ', ' + ae.keys_repaired + ' keys repaired, ' + ae.tombstones_purged + ' tombstones purged, ' +
    ae.tree_rebuilds + ' tree rebuilds, ' + ae.dirty_partitions + ' partitions waiting for a rebuild.';
  const rows = Object.entries(ae.peers || {}).sort().map(([peer, p]) => el('tr', { 'data-peer': peer },
    el('td', null, peer),
    el('td', null, ago(p.last_exchange_ms)),
    el('td', { class: p.last_result === 'ok' ? '' : 'error' }, p.last_result),
    el('td', { class: 'num' }, p.partitions_differing),
    el('td', { class: 'num' }, p.segments_differing),
    el('td', { class: 'num' }, p.keys_sent),
    el('td', { class: 'num' }, p.keys_received)));
  byId('ae-peers').tBodies[0].replaceChildren(...rows);
}

function renderTransfers() {
  const t = view.cluster.transfers;
  const box = byId('transfers');
  if (t == null) {
    box.replaceChildren('This node reports no transfers.');
    return;
  }
  // The inner shape is the node's to choose: show whatever it reports.
  const rows = [];
  const walk = (prefix, value) => {
    if (value && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length) {
      for (const [k, v] of Object.entries(value)) walk(prefix ? prefix + '.' + k : k, v);
    } else {
      rows.push(el('tr', null, el('td', null, prefix || 'transfers'),
        el('td', null, typeof value === 'object' ? JSON.stringify(value) : String(value))));
    }
  };
  walk('', t);
  box.replaceChildren(rows.length ? el('table', null, el('tbody', null, ...rows)) : 'None in progress.');
}

// ---- charts (canvas, no library) -------------------------------------------

function renderCharts() {
  drawChart(byId('chart-ops'), 'ops', (v) => v.toFixed(v < 10 ? 1 : 0));
  drawChart(byId('chart-p99'), 'p99', (v) => v.toFixed(v < 10 ? 2 : 0));
  const legend = [...view.history.keys()].sort().map((id) =>
    el('span', { style: '--swatch:' + colorOf(id) }, id));
  byId('legend').replaceChildren(...legend);
}

function drawChart(canvas, field, label) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 220;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const left = 48, right = 8, top = 8, bottom = 20;
  const now = Date.now();
  let max = 0;
  for (const points of view.history.values()) {
    for (const p of points) if (p[field] != null) max = Math.max(max, p[field]);
  }
  // Four grid steps of a round size.
  max = 4 * niceCeiling((max || 1) / 4);
  const x = (t) => left + (width - left - right) * (1 - (now - t) / (HISTORY_S * 1000));
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#667085';
  g.strokeStyle = '#e3e6ec';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(width - right, y(v)); g.stroke();
    g.fillText(label(v), 4, y(v) + 4);
  }
  for (const s of [120, 90, 60, 30]) {
    g.fillText('-' + s + ' s', x(now - s * 1000) - 12, height - 5);
  }
  for (const [id, points] of view.history) {
    g.strokeStyle = colorOf(id);
    g.lineWidth = 2;
    g.beginPath();
    let drawing = false;
    for (const p of points) {
      if (p[field] == null) { drawing = false; continue; } // a gap while a node is down
      if (drawing) g.lineTo(x(p.t), y(p[field])); else g.moveTo(x(p.t), y(p[field]));
      drawing = true;
    }
    g.stroke();
  }
}

function niceCeiling(v) {
  const power = Math.pow(10, Math.floor(Math.log10(v)));
  for (const step of [1, 2, 2.5, 5, 10]) if (v <= step * power) return step * power;
  return 10 * power;
}

// ---- console: get / put / delete, siblings and their context ---------------

const encoder = new TextEncoder();

function keyPath() {
  const key = byId('kv-key').value;
  if (!key) throw new Error('enter a key');
  return '/kv/' + encodeURIComponent(key);
}

// Bytes as text when they are UTF-8, else as base64.
function showBytes(bytesArray) {
  try {
    return el('span', { class: 'value' }, new TextDecoder('utf-8', { fatal: true }).decode(bytesArray));
  } catch (_) {
    return el('span', { class: 'value' }, 'base64:' + toBase64(bytesArray));
  }
}

function toBase64(bytesArray) {
  let s = '';
  for (const b of bytesArray) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function result(status, ...children) {
  byId('kv-result').replaceChildren(el('div', { class: 'status', id: 'kv-status' }, status), ...children);
}

function contextLine(context) {
  return context ? el('div', { class: 'context' }, 'context ', el('span', { id: 'kv-result-context' }, context)) : null;
}

function writeLine(response) {
  const acks = response.headers.get('x-ringkv-acks');
  const hinted = response.headers.get('x-ringkv-hinted');
  return el('div', null, 'acknowledged by ' + (acks || '?') + (hinted ? '; hinted ' + hinted : ''));
}

async function consoleAction(action) {
  try {
    await action();
  } catch (e) {
    result('error', el('div', { class: 'error' }, e.message || String(e)));
  }
}

async function get() {
  const path = keyPath();
  const response = await call(path);
  const context = response.headers.get('x-ringkv-context') || '';
  byId('kv-context').value = context;
  if (response.status === 200) {
    const value = new Uint8Array(await response.arrayBuffer());
    result('200 one value', el('div', { id: 'kv-values' }, showBytes(value)), contextLine(context));
  } else if (response.status === 300) {
    const body = await response.json();
    byId('kv-context').value = body.context;
    const items = body.siblings.map((b64, i) => {
      const value = fromBase64(b64);
      const keep = el('button', { type: 'button', class: 'keep', textContent: 'keep this one' });
      keep.onclick = () => consoleAction(() => write(value, body.context, 'resolved: kept sibling ' + (i + 1)));
      return el('li', { class: 'sibling' }, showBytes(value), ' ', keep);
    });
    result('300 ' + items.length + ' siblings (concurrent values)',
      el('ol', { id: 'kv-values' }, ...items),
      contextLine(body.context),
      el('div', { class: 'note' }, 'Keep one, or edit the value above and Put: either write supersedes all of them.'));
  } else if (response.status === 404) {
    result('404 not found', contextLine(context ? context + ' (deleted: a tombstone)' : ''));
  } else {
    result(await describeError(response));
  }
}

async function write(value, context, what) {
  const headers = {};
  if (context) headers['X-Ringkv-Context'] = context;
  const response = await call(keyPath(), { method: 'PUT', body: value, headers });
  if (response.status !== 204) { result(await describeError(response)); return; }
  const next = response.headers.get('x-ringkv-context') || '';
  byId('kv-context').value = next;
  result('204 ' + what, writeLine(response), contextLine(next));
}

async function remove() {
  const headers = {};
  const context = byId('kv-context').value.trim();
  if (context) headers['X-Ringkv-Context'] = context;
  const response = await call(keyPath(), { method: 'DELETE', headers });
  if (response.status !== 204) { result(await describeError(response)); return; }
  byId('kv-context').value = '';
  result('204 deleted', writeLine(response));
}

function setUpConsole() {
  const value = () => encoder.encode(byId('kv-value').value);
  byId('kv-get').onclick = () => consoleAction(get);
  byId('kv-put').onclick = () => consoleAction(() => {
    const context = byId('kv-context').value.trim();
    return write(value(), context, context ? 'written over the context' : 'written (no context: blind)');
  });
  byId('kv-blind').onclick = () => consoleAction(() => write(value(), '', 'written blind (no context)'));
  byId('kv-delete').onclick = () => consoleAction(remove);
  byId('kv-key').addEventListener('keydown', (e) => { if (e.key === 'Enter') consoleAction(get); });
}

// The page's policy allows this origin only; anything refused is kept for the tests.
window.ringkvCspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => window.ringkvCspViolations.push(e.blockedURI));

setUpConsole();
poll(POLL_MS, pollCluster);
poll(RING_POLL_MS, pollRing);
poll(POLL_MS, pollStats);
window.addEventListener('resize', renderCharts);
