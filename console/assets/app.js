// streamd console: plain JavaScript, no dependencies. Data comes from the
// console's JSON endpoints and its Server-Sent Events; every text is set
// with textContent, never parsed as HTML.
'use strict';

const $ = (s) => document.querySelector(s);
const SVG = 'http://www.w3.org/2000/svg';

let session = null; // api/session
let snap = null; // the last snapshot of api/live
let selected = null; // the consumer the actions apply to

function el(tag, attrs, ...children) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.setAttribute('class', v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const fmtInt = (n) => Number(n).toLocaleString('en-US');
function fmtBytes(n) {
  if (n < 0) return 'unknown';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}
const fmtRate = (n) => fmtBytes(Math.round(n)) + '/s';
const lastOf = (a) => (a && a.length ? a[a.length - 1] : 0);
function fmtDuration(s) {
  if (s < 0) return '∞';
  s = Math.floor(s);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}

// api POSTs a JSON action with the session's CSRF token.
async function api(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Console-CSRF': session.csrf || '' },
    body: JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({ error: r.status + ' ' + r.statusText }));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}

async function start() {
  session = await (await fetch('api/session')).json();
  $('#region').textContent = session.region;
  if (session.auth && !session.logged_in) {
    $('#login').hidden = false;
    $('#conn').textContent = 'logged out';
    return;
  }
  $('#logout').hidden = !session.auth;
  $('#pages').hidden = false;
  window.addEventListener('hashchange', route);
  route();
  connectLive();
  setInterval(countdown, 1000);
}

function route() {
  const page = (location.hash || '#overview').slice(1);
  for (const p of document.querySelectorAll('.page')) p.classList.toggle('active', p.id === 'page-' + page);
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page);
}

function connectLive() {
  const es = new EventSource('api/live');
  es.addEventListener('snapshot', (m) => {
    snap = JSON.parse(m.data);
    $('#conn').textContent = 'live · ' + new Date(snap.time_unix_ms).toLocaleTimeString();
    render();
  });
  es.onerror = () => { $('#conn').textContent = 'reconnecting…'; };
}

function render() {
  renderOverview();
  renderConsumers();
  renderRegions();
  renderAggregates();
  document.body.dataset.sample = String(snap.time_unix_ms);
}

function setText(sel, text, value) {
  const e = $(sel);
  e.textContent = text;
  if (value !== undefined) e.dataset.value = String(value);
}

function renderOverview() {
  const s = snap;
  setText('#ov-health', s.health, s.health);
  $('#ov-health').className = 'value ' + (s.health === 'SERVING' ? 'ok' : 'bad');
  setText('#ov-health-err', s.health_err || '');
  setText('#ov-journal-id', s.journal_id, s.journal_id);
  setText('#ov-events', fmtInt(s.events), s.events);
  setText('#ov-first', fmtInt(s.first_offset), s.first_offset);
  setText('#ov-last', fmtInt(s.last_offset), s.last_offset);
  setText('#ov-bytes', fmtBytes(s.bytes), s.bytes);
  setText('#ov-disk', fmtBytes(s.disk_bytes), s.disk_bytes);
  setText('#ov-free', fmtBytes(s.free_bytes), s.free_bytes);
  const last = (a) => (a.length ? a[a.length - 1] : 0);
  setText('#ov-rate', last(s.rate).toFixed(1), last(s.rate));
  setText('#ov-fsync', last(s.fsync_ms).toFixed(2), last(s.fsync_ms));
  setText('#ov-commits', fmtInt(last(s.commits)), last(s.commits));
  setText('#ov-window', String(s.window_seconds));
  chart($('#chart-rate'), s.times, s.rate, s.window_seconds);
  chart($('#chart-fsync'), s.times, s.fsync_ms, s.window_seconds);
}

// chart draws values up to the last time as a polyline in a 600x120 SVG,
// with the largest value as a label.
function chart(svg, times, values, windowSeconds) {
  svg.replaceChildren();
  if (!times.length) return;
  // The span grows with the samples kept, from a minute up to the window.
  const end = times[times.length - 1], span = Math.min(windowSeconds * 1000, Math.max(60000, end - times[0]));
  const top = Math.max(...values, 1e-9);
  const pts = times.map((t, i) => {
    const x = 600 - ((end - t) / span) * 600, y = 115 - (values[i] / top) * 105;
    return x.toFixed(1) + ',' + y.toFixed(1);
  });
  svg.append(el('svg:polyline', { points: pts.join(' ') }));
  svg.append(el('svg:text', { x: 4, y: 12, text: 'max ' + (top >= 100 ? fmtInt(Math.round(top)) : top.toFixed(2)) }));
}

function sparkline(values) {
  const svg = el('svg:svg', { class: 'spark', viewBox: '0 0 120 24', preserveAspectRatio: 'none' });
  const vs = values.filter((v) => v >= 0);
  if (vs.length < 2) return svg;
  const top = Math.max(...vs, 1);
  const pts = values.map((v, i) => (i * 120 / (values.length - 1)).toFixed(1) + ',' + (22 - (Math.max(v, 0) / top) * 20).toFixed(1));
  svg.append(el('svg:polyline', { points: pts.join(' ') }));
  return svg;
}

// filterCell lists criteria with their expiry countdown; with remove, a
// button that previews the removal.
function filterCell(name, criteria, remove) {
  const td = el('td', { class: 'c-filter mono small' });
  if (!criteria || !criteria.length) td.append(el('span', { class: 'muted', text: 'everything' }));
  for (const c of criteria || []) {
    const line = el('div', { class: 'criterion' }, el('span', { class: 'c-text', text: c.text }));
    if (c.expires_unix_ms) line.append(' ', el('span', { class: 'countdown muted', 'data-expires': c.expires_unix_ms }));
    if (remove) line.append(' ', el('button', { class: 'c-remove', title: 'remove (preview first)', text: '×', onclick: (ev) => { ev.stopPropagation(); select(name); previewFilter({ remove: [c.text] }); } }));
    td.append(line);
  }
  return td;
}

function countdown() {
  for (const e of document.querySelectorAll('.countdown')) {
    const left = (Number(e.dataset.expires) - Date.now()) / 1000;
    e.textContent = left > 0 ? 'expires in ' + fmtDuration(left) : 'expired';
  }
}

function renderConsumers() {
  setText('#cons-error', snap.admin_error || '');
  const body = $('#consumers tbody');
  body.replaceChildren();
  for (const c of snap.consumers || []) {
    const prods = c.producers && c.producers.length ? c.producers : [null];
    prods.forEach((p, i) => {
      const tr = el('tr', { 'data-consumer': c.name, onclick: () => select(c.name) });
      if (c.name === selected) tr.classList.add('selected');
      if (i === 0) {
        const n = prods.length;
        tr.append(el('td', { class: 'c-name mono', rowspan: n, text: c.name }), el('td', { class: 'c-stream', rowspan: n, text: c.stream || 'all' }),
          el('td', { class: 'c-running ' + (c.running ? 'ok' : 'bad'), rowspan: n, text: c.running ? 'yes' : 'no' + (c.error ? ': ' + c.error : '') }));
      }
      tr.append(el('td', { class: 'c-producer mono', text: p ? p.addr : '—' }),
        el('td', { class: 'c-connected ' + (p && p.connected ? 'ok' : 'bad'), text: p ? (p.connected ? 'yes' : 'no') : '—', title: (p && p.last_error) || '' }),
        el('td', { class: 'c-offset', 'data-value': p ? p.offset : '', text: p ? fmtInt(p.offset) : '—' }),
        el('td', { class: 'c-lag', 'data-value': p ? p.lag : '', text: p ? fmtInt(p.lag) : '—' }));
      if (i === 0) {
        const n = prods.length;
        const spark = el('td', { rowspan: n }, sparkline((snap.lags || {})[c.name] || []));
        const behind = (snap.behind_seconds || {})[c.name];
        tr.append(spark, el('td', { class: 'c-behind', rowspan: n, text: behind === undefined ? '—' : behind <= 1 ? 'caught up' : fmtDuration(behind) }));
        const f = filterCell(c.name, (snap.filters || {})[c.name], session.act);
        f.setAttribute('rowspan', n);
        tr.append(f);
      }
      body.append(tr);
    });
  }
  // Readers as the admin API reports them (stored offsets, lag in time),
  // or else the open streams from the metrics.
  const readers = $('#readers tbody');
  readers.replaceChildren();
  const cell = (cls, text, value) => el('td', value === undefined ? { class: cls, text: text } : { class: cls, text: text, 'data-value': value });
  if ((snap.reported || []).length) {
    for (const r of snap.reported) {
      const slices = r.slices ? (r.slices.first || 0) + '–' + (r.slices.last || 0) : 'all';
      const seen = r.connected ? 'now' : r.last_seen_unix_nano ? fmtDuration(Date.now() / 1000 - Number(r.last_seen_unix_nano) / 1e9) + ' ago' : '—';
      readers.append(el('tr', { 'data-reader': (r.stream || 'all') + '/' + r.consumer },
        cell('', r.stream || 'all'), cell('mono', r.consumer), cell('', slices),
        cell(r.connected ? 'ok' : 'bad', r.connected ? 'yes' : 'no'), cell('r-offset', fmtInt(r.stored_offset || 0), r.stored_offset || 0),
        cell('r-lag', fmtInt(r.lag || 0), r.lag || 0), cell('r-lag-time', r.lag_nanos ? fmtDuration(Number(r.lag_nanos) / 1e9) : '0s'),
        cell('', '—'), cell('', seen)));
    }
  } else {
    for (const r of snap.readers || []) {
      readers.append(el('tr', { 'data-reader': r.stream + '/' + r.consumer },
        cell('', r.stream), cell('mono', r.consumer), cell('', '—'), cell('ok', 'yes'), cell('', '—'),
        cell('r-lag', fmtInt(r.lag), r.lag), cell('', '—'), cell('', fmtInt(r.sent)), cell('', 'now')));
    }
  }
  countdown();
}

function select(name) {
  if (selected !== name) {
    selected = name;
    for (const id of ['#move-out', '#filter-out']) $(id).replaceChildren();
    for (const id of ['#move-error', '#filter-error']) $(id).textContent = '';
    $('#move-execute').hidden = $('#filter-execute').hidden = true;
  }
  $('#actions').hidden = false;
  $('#act-consumer').textContent = name;
  for (const e of document.querySelectorAll('#actions .act')) e.hidden = !session.act;
  $('#act-denied').hidden = session.act;
  for (const tr of document.querySelectorAll('#consumers tr[data-consumer]')) tr.classList.toggle('selected', tr.dataset.consumer === name);
}

// The move and filter actions: a preview (a dry run) first; Execute sends
// exactly the request previewed, with execute set.
let pendingMove = null, pendingFilter = null;

function moveRequest() {
  const to = $('#move-to').value, at = $('#move-at').value.trim();
  const req = { consumer: selected, to: to, execute: false };
  if (to === 'offset') req.offset = Number(at);
  if (to === 'time') req.time = at;
  return req;
}

function changesTable(changes) {
  const t = el('table', { class: 'changes' }, el('thead', {}, el('tr', {}, ...['journal', 'slices', 'from', 'to'].map((h) => el('th', { text: h })))));
  const b = el('tbody');
  for (const c of changes) b.append(el('tr', {}, el('td', { class: 'mono small', text: c.journal_id }), el('td', { text: c.slices }), el('td', { class: 'ch-from', text: c.from }), el('td', { class: 'ch-to', text: c.to })));
  t.append(b);
  return t;
}

async function previewMove() {
  $('#move-error').textContent = '';
  $('#move-execute').hidden = true;
  const req = moveRequest();
  try {
    const res = await api('api/offsets/move', req);
    $('#move-out').replaceChildren(el('p', { class: 'muted', text: 'dry run: nothing changed' }), changesTable(res.changes));
    pendingMove = req;
    $('#move-execute').hidden = false;
  } catch (e) { $('#move-error').textContent = e.message; }
}

async function executeMove() {
  $('#move-execute').hidden = true;
  try {
    const res = await api('api/offsets/move', Object.assign({}, pendingMove, { execute: true }));
    $('#move-out').replaceChildren(el('p', { id: 'move-done', class: 'ok', text: 'changed ' + res.changes.length + ' offset(s); ' + pendingMove.consumer + ' runs from there now' }), changesTable(res.changes));
  } catch (e) { $('#move-error').textContent = e.message; }
}

function criteriaList(criteria) {
  const ul = el('ul', { class: 'mono small' });
  for (const c of criteria) ul.append(el('li', { text: c.text }));
  if (!criteria.length) ul.append(el('li', { class: 'muted', text: 'everything (no criteria)' }));
  return ul;
}

async function previewFilter(change) {
  $('#filter-error').textContent = '';
  $('#filter-execute').hidden = true;
  const req = Object.assign({ consumer: selected, add: [], remove: [], execute: false }, change);
  try {
    const res = await api('api/filters/update', req);
    const what = req.remove.length ? 'remove ' + req.remove.join(', ') : 'add ' + req.add.join(', ');
    $('#filter-out').replaceChildren(el('p', { class: 'muted', text: 'preview (' + what + '): the filter would be' }), criteriaList(res.filter));
    pendingFilter = req;
    $('#filter-execute').hidden = false;
  } catch (e) { $('#filter-error').textContent = e.message; }
}

async function executeFilter() {
  $('#filter-execute').hidden = true;
  try {
    const res = await api('api/filters/update', Object.assign({}, pendingFilter, { execute: true }));
    $('#filter-out').replaceChildren(el('p', { id: 'filter-done', class: 'ok', text: 'applied; ' + pendingFilter.consumer + ' runs with this filter now' }), criteriaList(res.filter));
  } catch (e) { $('#filter-error').textContent = e.message; }
}

// Live tail.
let tail = null, paused = false, buffered = [];
const maxRows = 1000;

async function startTail() {
  if (tail) { stopTail(); return; }
  $('#tail-error').textContent = '';
  const lines = $('#tail-filter').value.split('\n').map((l) => l.trim()).filter((l) => l);
  const q = new URLSearchParams();
  for (const l of lines) q.append('filter', l);
  const chk = await (await fetch('api/parse?' + q)).json();
  if (chk.error) {
    $('#tail-error').textContent = 'line ' + chk.error.line + ': ' + chk.error.error;
    return;
  }
  q.set('stream', $('#tail-stream').value.trim());
  q.set('from', $('#tail-from').value);
  q.set('at', $('#tail-at').value.trim());
  $('#tail-rows').replaceChildren();
  $('#tail-json').textContent = '';
  buffered = [];
  paused = false;
  tail = new EventSource('api/tail?' + q);
  $('#tail-start').textContent = 'Stop';
  $('#tail-pause').disabled = false;
  $('#tail-pause').textContent = 'Pause';
  $('#tail-status').textContent = 'connecting…';
  tail.addEventListener('hello', (m) => {
    const h = JSON.parse(m.data);
    $('#tail-status').textContent = 'from offset ' + fmtInt(h.start_offset) + ' (last ' + fmtInt(h.last_offset) + ')';
    $('#tail-status').dataset.state = 'streaming';
  });
  tail.addEventListener('events', (m) => {
    const evs = JSON.parse(m.data);
    if (paused) { buffered.push(...evs); $('#tail-status').textContent = 'paused, ' + buffered.length + ' buffered'; return; }
    addRows(evs);
  });
  tail.addEventListener('failure', (m) => { $('#tail-error').textContent = JSON.parse(m.data).error; stopTail(); });
  tail.onerror = () => { if (tail && tail.readyState !== EventSource.OPEN) { $('#tail-error').textContent = 'the tail stopped (the server closed it or refused it)'; stopTail(); } };
}

function stopTail() {
  if (tail) tail.close();
  tail = null;
  $('#tail-start').textContent = 'Start';
  $('#tail-pause').disabled = true;
  $('#tail-status').dataset.state = 'stopped';
}

function addRows(evs) {
  const body = $('#tail-rows');
  for (const e of evs) {
    const payload = e.payload !== undefined ? e.payload : 'base64:' + e.payload_base64;
    body.append(el('tr', { 'data-offset': e.offset, onclick: () => { $('#tail-json').textContent = JSON.stringify(e, null, 2); } },
      el('td', { text: String(e.offset) }), el('td', { class: 'mono', text: e.entity_type + '/' + e.entity_id }), el('td', { text: String(e.seq_nr) }),
      el('td', { text: e.event_type }), el('td', { text: e.tags.join(',') }), el('td', { text: e.origin || '' }), el('td', { class: 'mono', text: payload.slice(0, 80) })));
  }
  while (body.children.length > maxRows) body.firstChild.remove();
}

function togglePause() {
  paused = !paused;
  $('#tail-pause').textContent = paused ? 'Resume' : 'Pause';
  if (!paused) { addRows(buffered); buffered = []; $('#tail-status').textContent = 'streaming'; }
  else $('#tail-status').textContent = 'paused';
}

// Regions: this region on the left, the regions it replicates from on the
// right, a line per replication (green: connected, red dashed: not).
function renderRegions() {
  const name = snap.region || '(no region)';
  $('#rg-name').textContent = name;
  const byName = {};
  for (const c of snap.consumers || []) byName[c.name] = c;
  const svg = $('#regions-map');
  svg.replaceChildren();
  const links = snap.links || [];
  const self = { x: 110, y: 130 };
  links.forEach((l, i) => {
    const y = links.length === 1 ? 130 : 30 + (i * 200) / (links.length - 1);
    const c = byName[l.consumer];
    const up = c && c.running && (c.producers || []).some((p) => p.connected);
    const lag = c ? (c.producers || []).reduce((s, p) => s + Number(p.lag), 0) : 0;
    const rate = ((snap.offsets_per_second || {})[l.consumer] || []).slice(-1)[0] || 0;
    const b = (snap.link_bytes || {})[l.consumer] || {};
    const mid = (self.y + y) / 2;
    svg.append(el('svg:line', { x1: self.x + 50, y1: self.y, x2: 480, y2: y, class: up ? 'up' : 'down', 'data-link': l.consumer }));
    svg.append(el('svg:text', { x: 230, y: mid - 6, text: (up ? 'up' : 'down') + ' · lag ' + fmtInt(lag) + ' · ' + rate.toFixed(1) + ' offsets/s' }));
    svg.append(el('svg:text', { x: 230, y: mid + 10, 'data-link-bytes': l.consumer },
      el('svg:tspan', { class: 'k-summary', text: 'summaries ' + fmtRate(lastOf(b.summary_per_second)) }),
      el('svg:tspan', { text: ' · ' }),
      el('svg:tspan', { class: 'k-detail', text: 'detail ' + fmtRate(lastOf(b.detail_per_second)) })));
    svg.append(el('svg:rect', { x: 480, y: y - 16, width: 120, height: 32, rx: 6, class: 'node' }));
    svg.append(el('svg:text', { x: 490, y: y + 4, text: l.from + (l.stream ? ' / ' + l.stream : '') }));
  });
  svg.append(el('svg:rect', { x: self.x - 60, y: self.y - 18, width: 110, height: 36, rx: 6, class: 'node self' }));
  svg.append(el('svg:text', { x: self.x - 50, y: self.y + 4, text: name + ' (here)' }));
  if (!links.length) svg.append(el('svg:text', { x: 250, y: 130, text: 'no replications: this streamd copies no other region' }));

  const body = $('#links tbody');
  body.replaceChildren();
  for (const l of links) {
    const c = byName[l.consumer] || { producers: [] };
    const ps = c.producers || [];
    const sum = (f) => ps.reduce((s, p) => s + Number(p[f]), 0);
    const rate = ((snap.offsets_per_second || {})[l.consumer] || []).slice(-1)[0] || 0;
    const b = (snap.link_bytes || {})[l.consumer] || {};
    const sr = lastOf(b.summary_per_second), dr = lastOf(b.detail_per_second);
    // The filter it runs with now (an on-demand link's includes of entities
    // expiring), else the config's.
    const live = (snap.filters || {})[l.consumer];
    const filter = live ? filterCell(l.consumer, live, false) : el('td', { class: 'mono small', text: (l.filter || []).join('; ') || 'everything' });
    filter.classList.add('l-filter');
    body.append(el('tr', { 'data-link': l.consumer },
      el('td', { text: l.from }), el('td', { class: 'mono', text: l.consumer }), el('td', { text: l.stream || '(default)' }),
      el('td', { class: 'mono small', text: l.addrs.join(' ') }),
      el('td', { class: 'l-connected ' + (ps.some((p) => p.connected) ? 'ok' : 'bad'), text: ps.some((p) => p.connected) ? 'yes' : 'no' }),
      el('td', { class: 'l-running', text: c.running ? 'yes' : 'no' }),
      el('td', { class: 'l-offset', 'data-value': sum('offset'), text: fmtInt(sum('offset')) }),
      el('td', { class: 'l-lag', 'data-value': sum('lag'), text: fmtInt(sum('lag')) }),
      el('td', { class: 'l-moves', 'data-value': rate, text: rate.toFixed(1) }),
      el('td', { class: 'l-summary-rate k-summary', 'data-value': sr, text: fmtRate(sr) }),
      el('td', { class: 'l-detail-rate k-detail', 'data-value': dr, text: fmtRate(dr) }),
      el('td', { class: 'l-summary-bytes', 'data-value': b.summary || 0, text: fmtBytes(b.summary || 0) }),
      el('td', { class: 'l-detail-bytes', 'data-value': b.detail || 0, text: fmtBytes(b.detail || 0) }),
      filter));
  }
  const types = $('#entity-types tbody');
  types.replaceChildren();
  for (const t of snap.entity_types || []) {
    let pinned = t.pinned_in ? new Date(t.pinned_at_unix_ms).toISOString().replace('.000Z', 'Z') + ' in ' + t.pinned_in : t.mode === 'pinned' ? '(the configured primary)' : '—';
    if (!t.name) pinned = t.mode === 'pinned' ? 'per type: streamctl primary get --type T' : '—';
    types.append(el('tr', { 'data-type': t.name }, el('td', { class: 't-name' + (t.name ? '' : ' muted'), text: t.name || '(every other type)' }), el('td', { class: 't-mode', text: t.mode }),
      el('td', { class: 't-configured', text: t.configured || '—' }),
      el('td', { class: 't-primary ' + (t.error ? 'bad' : ''), text: t.error ? t.error : t.primary || '—' }),
      el('td', { class: 't-pinned small', text: pinned }),
      el('td', { class: 't-forwards', 'data-value': t.forwards, text: fmtInt(t.forwards) }),
      el('td', { class: 't-takeovers', 'data-value': t.takeovers, text: fmtInt(t.takeovers) })));
  }
  if (!(snap.entity_types || []).length) types.append(el('tr', {}, el('td', { class: 'muted', colspan: 7, text: 'no entity types configured' })));
  renderFailover();
  renderInterest();
}

// Failover: a form to fail a region over to this one (the region serving
// the request takes over), a dry run first; Execute sends exactly the
// request of the last dry run, with execute set.
let pendingFailover = null;

function renderFailover() {
  const here = snap.region;
  const others = [...new Set((snap.links || []).map((l) => l.from).filter((r) => r && r !== here))].sort();
  $('#rg-failover').hidden = !here || !others.length;
  if ($('#rg-failover').hidden) return;
  const fill = (sel, names, pick) => {
    const s = $(sel);
    if ([...s.options].map((o) => o.value).join(' ') === names.join(' ')) return;
    const keep = s.value;
    s.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
    s.value = names.includes(keep) ? keep : pick;
  };
  fill('#fo-from', others, others[0]);
  fill('#fo-to', [here, ...others], here);
  for (const id of ['#fo-from', '#fo-to', '#fo-dry-run']) $(id).disabled = !session.act;
  $('#fo-denied').hidden = session.act;
}

function failoverReport(res) {
  const t = el('table', { class: 'fo-progress' }, el('thead', {}, el('tr', {}, ...['region', 'reachable', 'applied', 'known'].map((h) => el('th', { text: h })))));
  const b = el('tbody');
  for (const p of res.progress) {
    const cell = (cls, v) => el('td', { class: cls, 'data-value': p.reachable ? v : '-', text: p.reachable ? fmtInt(v) : '-' });
    b.append(el('tr', { 'data-region': p.region, title: p.error || '' }, el('td', { text: p.region }),
      el('td', { class: 'fo-reachable ' + (p.reachable ? 'ok' : 'bad'), text: p.reachable ? 'yes' : 'no' }),
      cell('fo-applied', p.applied_offset), cell('fo-known', p.known_offset)));
  }
  t.append(b);
  const notes = el('ul', { class: 'fo-notes small' });
  // The note of what is at risk in red when the failover may lose events.
  for (const n of res.notes) notes.append(el('li', { class: n.startsWith('at risk: ') && Number(res.at_risk) ? 'bad' : '', text: n }));
  return [t, notes];
}

async function dryRunFailover() {
  $('#fo-error').textContent = '';
  $('#fo-execute').hidden = true;
  pendingFailover = null;
  const req = { from: $('#fo-from').value, to: $('#fo-to').value, execute: false };
  try {
    const res = await api('api/primary/failover', req);
    $('#fo-out').replaceChildren(el('p', { class: 'muted', text: 'dry run from ' + req.from + ' to ' + req.to + ': nothing changed' }), ...failoverReport(res));
    pendingFailover = req;
    $('#fo-execute').textContent = 'Execute: fail over from ' + req.from + ' to ' + req.to;
    $('#fo-execute').hidden = false;
  } catch (e) { $('#fo-error').textContent = e.message; }
}

async function executeFailover() {
  $('#fo-execute').hidden = true;
  if (!pendingFailover) return;
  const req = Object.assign({}, pendingFailover, { execute: true });
  pendingFailover = null;
  try {
    const res = await api('api/primary/failover', req);
    $('#fo-out').replaceChildren(el('p', { id: 'fo-done', class: 'ok', 'data-offset': res.offset,
      text: 'failed over from ' + req.from + ' to ' + req.to + ' (record at offset ' + fmtInt(res.offset) + ')' }), ...failoverReport(res));
  } catch (e) { $('#fo-error').textContent = e.message; }
}

// Interest: the on-demand entity types, and the entities this region has
// interest in, whose events are replicated here until the interest expires.
function renderInterest() {
  const types = (snap.entity_types || []).filter((t) => t.on_demand);
  const entries = snap.interests || [];
  $('#rg-interest').hidden = !types.length && !entries.length;
  setText('#int-error', snap.interests_error || '');
  const tb = $('#on-demand-types tbody');
  tb.replaceChildren();
  for (const t of types) {
    const n = entries.filter((x) => (x.entity_types || []).includes(t.name)).length;
    tb.append(el('tr', { 'data-type': t.name }, el('td', { class: 'o-name mono', text: t.name }),
      el('td', { class: 'o-summaries mono', text: (t.summary_types || []).join(', ') || '—' }),
      el('td', { class: 'o-inactivity', 'data-value': t.inactivity_ns, text: fmtDuration(t.inactivity_ns / 1e9) }),
      el('td', { class: 'o-entities', 'data-value': n, text: fmtInt(n) })));
  }
  const body = $('#interests tbody');
  body.replaceChildren();
  const utc = (ms) => (ms ? new Date(ms).toISOString().slice(0, 19) + 'Z' : '—');
  for (const x of entries) {
    body.append(el('tr', { 'data-entity': x.entity_id }, el('td', { class: 'i-entity mono', text: x.entity_id }),
      el('td', { class: 'i-types', text: (x.entity_types || []).join(',') || '—' }),
      el('td', { class: 'i-regions', text: (x.regions || []).join(',') }),
      el('td', { class: 'i-since small', 'data-value': x.since_unix_ms, text: utc(x.since_unix_ms) }),
      el('td', { class: 'i-expires small', 'data-value': x.expires_unix_ms, text: utc(x.expires_unix_ms) }),
      el('td', { class: 'i-left small' }, el('span', { class: 'countdown', 'data-expires': x.expires_unix_ms }))));
  }
  if (!entries.length) body.append(el('tr', {}, el('td', { class: 'muted', colspan: 6, text: 'no entity with interest now: a read or write here of an entity of an on-demand type registers it' })));
  countdown();
}

// Aggregation stages: their counters, and the last windows they wrote.
function renderAggregates() {
  setText('#agg-error', snap.aggregates_error || '');
  const body = $('#aggregates tbody');
  body.replaceChildren();
  const num = (cls, v) => el('td', { class: cls, 'data-value': Number(v), text: fmtInt(Number(v)) });
  const stages = snap.aggregates || [];
  for (const a of stages) {
    const skipped = ['skipped_not_json', 'skipped_missing_field', 'skipped_not_number', 'skipped_too_many_windows'].reduce((s, f) => s + Number(a[f]), 0);
    const wm = Number(a.watermark_unix_ms);
    body.append(el('tr', { 'data-stage': a.name },
      el('td', { class: 'mono', text: a.name }), el('td', { class: 'a-output', text: a.output_entity_type }),
      el('td', { class: 'a-running ' + (a.running ? 'ok' : 'bad'), text: a.running ? 'yes' : 'no' + (a.error ? ': ' + a.error : '') }),
      num('a-read', a.read), num('a-aggregated', a.aggregated), num('a-late', a.late),
      el('td', { class: 'a-skipped', 'data-value': skipped, text: fmtInt(skipped), title: 'not JSON ' + a.skipped_not_json + ', missing field ' + a.skipped_missing_field + ', not a number ' + a.skipped_not_number + ', too many windows ' + a.skipped_too_many_windows }),
      num('a-summaries', a.summaries), num('a-open', a.open_windows), num('a-lag', a.lag),
      el('td', { class: 'a-watermark small', text: wm ? new Date(wm).toISOString() : '—' })));
  }
  if (!stages.length) body.append(el('tr', {}, el('td', { class: 'muted', colspan: 11, text: 'no aggregation stages configured (aggregate: in --config)' })));
  const wins = $('#windows');
  wins.replaceChildren();
  const clock = (ms) => new Date(ms).toISOString().slice(11, 23);
  for (const a of stages) {
    const ws = ((snap.windows || {})[a.name] || []).slice().reverse();
    const top = Math.max(1, ...ws.map((w) => Number(w.events)));
    const t = el('table', { class: 'windows', 'data-stage': a.name },
      el('thead', {}, el('tr', {}, ...['window (UTC)', 'groups', 'events', '', 'written'].map((h) => el('th', { text: h })))));
    const b = el('tbody');
    for (const w of ws) {
      const bar = el('div', { class: 'bar' });
      bar.style.width = Math.round((Number(w.events) / top) * 120) + 'px'; // CSSOM: the CSP refuses style attributes
      b.append(el('tr', { 'data-start': w.start_unix_ms },
        el('td', { class: 'w-window mono small', text: clock(w.start_unix_ms) + ' – ' + clock(w.end_unix_ms) }),
        el('td', { class: 'w-summaries', 'data-value': w.summaries, text: fmtInt(w.summaries) }),
        el('td', { class: 'w-events', 'data-value': w.events, text: fmtInt(w.events) }),
        el('td', {}, bar),
        el('td', { class: 'small muted', text: clock(w.written_unix_ms) })));
    }
    if (!ws.length) b.append(el('tr', {}, el('td', { class: 'muted', colspan: 5, text: 'no window written since the console started' })));
    t.append(b);
    wins.append(el('h3', { text: 'Last windows of ' + a.name }), t);
  }
}

function wire() {
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('#login-error').textContent = '';
    const r = await fetch('api/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token: $('#login-token').value }) });
    if (!r.ok) { $('#login-error').textContent = (await r.json()).error; return; }
    location.reload();
  });
  $('#logout').addEventListener('click', async () => { await api('api/logout', {}); location.reload(); });
  $('#move-to').addEventListener('change', () => { $('#move-at').hidden = !['offset', 'time'].includes($('#move-to').value); });
  $('#tail-from').addEventListener('change', () => { $('#tail-at').hidden = !['offset', 'time'].includes($('#tail-from').value); });
  $('#move-preview').addEventListener('click', previewMove);
  $('#move-execute').addEventListener('click', executeMove);
  $('#filter-preview').addEventListener('click', () => previewFilter({ add: [$('#filter-text').value.trim()] }));
  $('#filter-execute').addEventListener('click', executeFilter);
  $('#fo-dry-run').addEventListener('click', dryRunFailover);
  $('#fo-execute').addEventListener('click', executeFailover);
  // A changed choice needs its own dry run before Execute.
  for (const id of ['#fo-from', '#fo-to']) $(id).addEventListener('change', () => { $('#fo-execute').hidden = true; pendingFailover = null; });
  $('#tail-start').addEventListener('click', startTail);
  $('#tail-pause').addEventListener('click', togglePause);
}

wire();
start();
