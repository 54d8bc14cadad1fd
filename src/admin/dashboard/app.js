// l402-proxy dashboard. Plain JavaScript, no dependencies, nothing fetched from elsewhere: it
// reads and acts through the admin API (/v1/*) with the admin token as a bearer.
'use strict';

(() => {
  const POLL_MS = 2000;
  const FULL_CHART_REFRESH_MS = 60000;
  const TOKEN_KEY = 'l402-proxy-admin-token';
  const HOUR = 3600;
  const DAY = 86400;
  const SERIES = 10;

  const $ = (id) => document.getElementById(id);
  const now = () => Math.floor(Date.now() / 1000);

  // ---------------------------------------------------------------- DOM helpers

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  /** An element; attributes are set as attributes (never HTML), children as nodes or text. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return append(el, children);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    }
    return append(el, children);
  }

  // ---------------------------------------------------------------- formatting

  const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const nf3 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 3, maximumFractionDigits: 3 });
  const nfCompact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });

  /** msat as sats: whole sats plainly, msat precision when there is a fraction. */
  function satsText(msat) {
    if (msat === null || msat === undefined) return '—';
    const whole = msat % 1000 === 0;
    const n = whole ? nf0.format(msat / 1000) : nf3.format(msat / 1000);
    return `${n} ${Math.abs(msat) === 1000 ? 'sat' : 'sats'}`;
  }

  function money(msat) {
    if (msat === null || msat === undefined) return h('span', { class: 'muted' }, '—');
    return h('span', { class: 'money', title: `${nf0.format(msat)} msat` }, satsText(msat));
  }

  function compactSats(msat) {
    const sats = msat / 1000;
    return sats < 1000 ? (Number.isInteger(sats) ? nf0.format(sats) : nf3.format(sats).replace(/0+$/, '').replace(/[.,]$/, '')) : nfCompact.format(sats);
  }

  function rfc3339(unix) {
    return new Date(unix * 1000).toISOString().replace('.000Z', 'Z');
  }

  const dfTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dfDateTime = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

  function localTime(unix) {
    const d = new Date(unix * 1000);
    const today = new Date();
    return d.toDateString() === today.toDateString() ? dfTime.format(d) : dfDateTime.format(d);
  }

  function relative(unix) {
    const diff = unix - now();
    const abs = Math.abs(diff);
    if (abs < 45) return rtf.format(Math.round(diff), 'second');
    if (abs < 2700) return rtf.format(Math.round(diff / 60), 'minute');
    if (abs < 79200) return rtf.format(Math.round(diff / 3600), 'hour');
    return rtf.format(Math.round(diff / 86400), 'day');
  }

  /** A local time, RFC 3339 on hover. */
  function timeEl(unix, rfc, rel) {
    if (unix === null || unix === undefined) return h('span', { class: 'muted' }, '—');
    const stamp = rfc || rfc3339(unix);
    return h('time', { datetime: stamp, title: stamp }, rel ? relative(unix) : localTime(unix));
  }

  // ---------------------------------------------------------------- token

  let memoryToken = null;
  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
    } catch (_) {
      return memoryToken;
    }
  }
  function setToken(t) {
    memoryToken = t;
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage refused: the token lives in memory only */ }
  }

  /** `#token=<token>` (for scripted use): stored, then wiped from the address bar and history. */
  function takeTokenFromFragment() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return false;
    let t = m[1];
    try { t = decodeURIComponent(t); } catch (_) { /* keep it raw */ }
    history.replaceState(null, '', location.pathname + location.search);
    if (!t) return false;
    setToken(t);
    return true;
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function request(method, path, body) {
    const token = getToken();
    if (!token) throw new ApiError(401, 'not signed in');
    const init = { method, headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, 'the admin API does not answer');
    }
    noteServerClock(res);
    if (res.status === 401) {
      if (getToken() === token) unauthorized();
      throw new ApiError(401, 'the admin token was refused');
    }
    return res;
  }

  // The server's clock, from the Date of its answers: approvals count down to its expires_at.
  // Only a skew of more than 2 s is taken into account (Date has whole seconds).
  let clockSkew = 0;
  function noteServerClock(res) {
    const date = Date.parse(res.headers.get('date') || '');
    if (Number.isNaN(date)) return;
    const skew = Math.round((date - Date.now()) / 1000);
    clockSkew = Math.abs(skew) > 2 ? skew : 0;
  }
  const serverNow = () => now() + clockSkew;

  async function api(method, path, body) {
    const res = await request(method, path, body);
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const msg = (data && data.error) || text.trim() || res.statusText || `HTTP ${res.status}`;
      throw new ApiError(res.status, msg);
    }
    return data;
  }

  const enc = encodeURIComponent;
  function qs(params) {
    const parts = [];
    for (const [k, v] of Object.entries(params)) {
      if (v === null || v === undefined || v === '') continue;
      parts.push(`${enc(k)}=${enc(v)}`);
    }
    return parts.length ? `?${parts.join('&')}` : '';
  }

  function notAvailable(e) {
    return e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501);
  }

  function explain(e) {
    if (notAvailable(e)) return 'This l402-proxy does not offer that through its admin API.';
    return e && e.message ? e.message : String(e);
  }

  // ---------------------------------------------------------------- toasts and dialogs

  function toast(message, bad) {
    const el = h('div', { class: bad ? 'toast bad' : 'toast', role: bad ? 'alert' : null }, message);
    $('toasts').append(el);
    setTimeout(() => el.remove(), bad ? 8000 : 4000);
  }

  const FOCUSABLE = 'button:not([disabled]), [href], input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

  function focusables(root) {
    return [...root.querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
  }

  const returnFocus = new WeakMap();
  function openDialog(dlg, focus) {
    if (!dlg.open) {
      returnFocus.set(dlg, document.activeElement);
      dlg.showModal();
    }
    const target = focus || focusables(dlg)[0];
    if (target) target.focus();
  }

  function setupDialog(dlg) {
    // Tab and Shift+Tab cycle inside the dialog; Escape closes it (the native cancel).
    dlg.addEventListener('keydown', (e) => {
      if (e.key !== 'Tab') return;
      const f = focusables(dlg);
      if (!f.length) return;
      const first = f[0];
      const last = f[f.length - 1];
      if (e.shiftKey && (document.activeElement === first || !dlg.contains(document.activeElement))) {
        e.preventDefault();
        last.focus();
      } else if (!e.shiftKey && (document.activeElement === last || !dlg.contains(document.activeElement))) {
        e.preventDefault();
        first.focus();
      }
    });
    dlg.addEventListener('close', () => {
      const back = returnFocus.get(dlg);
      returnFocus.delete(dlg);
      if (back && back.isConnected && typeof back.focus === 'function') back.focus();
    });
    for (const b of dlg.querySelectorAll('[data-close]')) b.addEventListener('click', () => dlg.close());
  }

  function showError(el, message) {
    el.textContent = message || '';
    el.hidden = !message;
  }

  /** A confirmation dialog; `action` runs on confirm, its error stays in the dialog. */
  function confirmThen(title, text, okLabel, action) {
    const dlg = $('confirm-dialog');
    $('confirm-h').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    showError($('confirm-error'), '');
    pendingConfirm = action;
    openDialog(dlg, $('confirm-cancel'));
  }
  let pendingConfirm = null;

  async function busy(button, fn) {
    if (button) button.disabled = true;
    try {
      return await fn();
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- state

  const state = {
    status: null,
    agents: [],
    colors: new Map(),
    payments: new Map(), // payment_hash -> payment, the last 30 days, for the charts
    paymentsTruncated: false,
    lastFullFetch: 0,
  };
  const sigs = new Map();
  function changed(key, data) {
    const sig = JSON.stringify(data);
    if (sigs.get(key) === sig) return false;
    sigs.set(key, sig);
    return true;
  }

  function colorOf(agent) {
    if (!state.colors.has(agent)) state.colors.set(agent, state.colors.size % SERIES);
    return state.colors.get(agent);
  }

  function assignColors(names) {
    // Known agents in name order first, so colours are stable while the set is.
    const sorted = [...new Set(names)].sort();
    const fresh = new Map();
    sorted.forEach((n, i) => fresh.set(n, i % SERIES));
    for (const n of state.colors.keys()) if (!fresh.has(n)) fresh.set(n, fresh.size % SERIES);
    state.colors = fresh;
  }

  function panelNote(id, message) {
    let el = $(`${id}-note`);
    if (!el) {
      if (!message) return;
      el = h('p', { class: 'panel-note', id: `${id}-note` });
      $(id).append(el);
    }
    el.textContent = message || '';
    el.hidden = !message;
  }

  function unavailable(container, key, what) {
    sigs.delete(key);
    container.replaceChildren(h('p', { class: 'unavailable' }, `${what} not available on this server.`));
  }

  // ---------------------------------------------------------------- overview (/v1/status)

  function proxyAddress() {
    const listen = state.status && state.status.proxy_listen;
    if (!listen) return { addr: `${location.hostname || '127.0.0.1'}:8402`, guessed: true };
    const m = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(listen);
    if (!m) return { addr: listen, guessed: false };
    const host = m[1];
    if (host === '0.0.0.0' || host === '[::]' || host === '::' || host === '') {
      return { addr: `${location.hostname}:${m[2]}`, guessed: false };
    }
    return { addr: listen, guessed: false };
  }

  function setFact(id, ...content) {
    $(id).replaceChildren(...content.flat().map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  }

  async function loadStatus() {
    let st;
    try {
      st = await api('GET', 'v1/status');
    } catch (e) {
      if (!notAvailable(e)) throw e;
      state.status = null;
      setFact('f-wallet', h('span', { class: 'muted' }, 'not available'));
      setFact('f-balance', h('span', { class: 'muted' }, 'not available'));
      setFact('f-store', h('span', { class: 'muted' }, 'not available'));
      setFact('f-proxy', h('span', { class: 'muted' }, 'not available'));
      setFact('f-agents', String(state.agents.length));
      setFact('f-pending', h('span', { class: 'muted' }, '—'));
      setFact('f-policy', h('span', { class: 'muted' }, 'not available'));
      panelNote('overview', 'Status (wallet, store) not available on this server.');
      $('version').textContent = '';
      return;
    }
    state.status = st;
    panelNote('overview', '');
    $('version').textContent = st.version ? `v${st.version}` : '';
    const wallet = st.wallet || {};
    setFact('f-wallet', wallet.backend || '—');
    if (typeof wallet.balance_msat === 'number') setFact('f-balance', money(wallet.balance_msat));
    else setFact('f-balance', h('span', { class: 'muted', title: wallet.error || 'This wallet backend does not report a balance' }, 'not reported'));
    const store = st.store || {};
    setFact('f-store', `${store.backend || '—'} `, h('span', { class: store.up ? 'badge up' : 'badge down' }, store.up ? 'up' : 'down'));
    setFact('f-proxy', h('code', {}, st.proxy_listen || '—'));
    const ag = st.agents;
    if (ag && typeof ag === 'object') {
      setFact('f-agents', `${ag.total ?? state.agents.length}`, ag.paused ? h('span', { class: 'muted' }, ` (${ag.paused} paused)`) : '');
    } else {
      setFact('f-agents', String(ag ?? state.agents.length));
    }
    setFact('f-pending', typeof st.pending_payments === 'number' ? nf0.format(st.pending_payments) : h('span', { class: 'muted' }, '—'));
    renderFleet(st.fleet);
    setFact('f-policy', policyFact(st.policy_hook));
  }

  /** The kill switch: the banner and the Payments fact say whether the fleet may pay. */
  function renderFleet(fleet) {
    const paused = !!(fleet && fleet.paused === true);
    state.fleetPaused = paused;
    $('pause-all').hidden = paused || !getToken();
    $('fleet-banner').hidden = !paused;
    if (paused) {
      const who = fleet.by === 'breaker' ? 'the fleet’s spend-spike breaker' : 'the operator';
      const text = `All payments are paused by ${who} (${fleet.reason || 'no reason given'}): agents’ paid requests are declined fleet-paused; free traffic and cached tokens still pass.`;
      if ($('fleet-banner-text').textContent !== text) $('fleet-banner-text').textContent = text;
      setFact('f-fleet', h('span', { class: 'badge down' }, 'paused'));
    } else if (fleet && fleet.paused === false) {
      setFact('f-fleet', h('span', { class: 'badge up' }, 'paying'));
    } else {
      setFact('f-fleet', h('span', { class: 'muted' }, '—'));
    }
  }

  function pauseAll() {
    confirmThen(
      'Pause all payments?',
      'Every agent’s paid requests are declined fleet-paused on every replica until you resume; payments already in flight finish, held approvals are denied. Free traffic and cached tokens keep working.',
      'Pause all payments',
      async () => {
        await api('POST', 'v1/pause-all', { reason: 'paused from the dashboard' });
        toast('All payments are paused.');
        await loadStatus();
      },
    );
  }

  async function resumeAll() {
    await busy($('resume-all'), async () => {
      try {
        await api('POST', 'v1/resume-all');
        toast('Payments resumed for the fleet.');
        await loadStatus();
      } catch (e) {
        if (e.status !== 401) toast(`Could not resume payments: ${explain(e)}`, true);
      }
    });
  }

  // The policy service payments are asked about: its host, how it fails, what it decided.
  function policyFact(hook) {
    if (!hook || typeof hook !== 'object') {
      return [h('span', { class: 'muted', title: 'No policy_hook configured: payments are not sent to a policy service' }, 'off')];
    }
    const d = hook.decisions || {};
    const open = hook.on_failure === 'allow';
    return [
      h('code', {}, String(hook.host || '—')), ' ',
      h('span', {
        class: open ? 'badge down' : 'badge up',
        title: open
          ? 'on_failure: allow — when the service does not answer, payments go ahead'
          : 'on_failure: deny — when the service does not answer, payments are declined policy-unavailable',
      }, open ? 'fail-open' : 'fail-closed'),
      h('div', { class: 'muted small', title: `timeout ${nf0.format(hook.timeout_ms || 0)} ms; decisions counted by this replica since it started` },
        `${nf0.format(d.allow || 0)} allowed · ${nf0.format(d.deny || 0)} denied · ${nf0.format(d.hold || 0)} held · ${nf0.format(d.error || 0)} failed`),
    ];
  }

  // ---------------------------------------------------------------- agents

  const WINDOWS = [
    ['hourly', 'This hour', 'hourly_sats'],
    ['daily', 'Today', 'daily_sats'],
    ['weekly', 'This week', 'weekly_sats'],
    ['monthly', 'This month', 'monthly_sats'],
    ['total', 'Total', 'total_sats'],
  ];
  const cards = new Map();

  function barRow(label, spent, limitSats, remaining, source) {
    const limit = limitSats === null || limitSats === undefined ? null : limitSats * 1000;
    const bar = h('div', { class: 'bar' }, h('span'));
    let text;
    if (limit === null) {
      bar.classList.add('none');
      bar.setAttribute('role', 'presentation');
      text = [money(spent || 0), ' spent · no limit'];
    } else {
      const frac = limit === 0 ? 1 : Math.min(1, (spent || 0) / limit);
      bar.firstChild.style.width = `${(frac * 100).toFixed(1)}%`;
      if (frac >= 1) bar.classList.add('full');
      else if (frac >= 0.8) bar.classList.add('warn');
      bar.setAttribute('role', 'meter');
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', String(limit));
      bar.setAttribute('aria-valuenow', String(Math.min(spent || 0, limit)));
      bar.setAttribute('aria-label', `${label}: ${satsText(spent || 0)} of ${satsText(limit)}`);
      text = [
        money(spent || 0), ' of ', money(limit), ' · ', money(remaining ?? Math.max(0, limit - (spent || 0))), ' left',
        source === 'admin' ? h('span', { class: 'badge', title: 'Set through the admin API (top-up or recall)' }, 'operator') : null,
      ];
    }
    return h('div', { class: 'bar-row' },
      h('span', { class: 'bar-label' }, label), bar,
      h('span', { class: 'bar-text' }, ...text));
  }

  function makeCard(name) {
    const c = {};
    c.swatch = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    c.title = h('h3', {}, name);
    c.badges = h('span', { class: 'agent-badges' });
    c.bars = h('div', { class: 'bars' });
    c.meta = h('div', { class: 'agent-meta' });
    c.guards = h('ul', { class: 'guards', 'aria-label': `Guardrails of ${name}`, hidden: true });
    c.note = h('p', { class: 'muted small', hidden: true });
    c.pause = h('button', { type: 'button', class: 'secondary small', 'data-action': 'pause', onclick: () => togglePause(name, c) }, 'Pause');
    c.budget = h('button', { type: 'button', class: 'secondary small', 'data-action': 'budget', 'aria-label': `Top up or recall ${name}`, onclick: () => openBudget(name) }, 'Top up / recall');
    c.rotate = h('button', { type: 'button', class: 'secondary small', 'data-action': 'rotate', 'aria-label': `Rotate the key of ${name}`, onclick: () => rotateKey(name) }, 'Rotate key');
    c.remove = h('button', { type: 'button', class: 'secondary small', 'data-action': 'delete', 'aria-label': `Delete ${name}`, onclick: () => deleteAgent(name) }, 'Delete');
    c.root = h('article', { class: 'agent', 'data-agent': name, 'aria-label': `Agent ${name}` },
      h('div', { class: 'agent-head' }, c.swatch, c.title, c.badges),
      c.bars, c.guards, c.meta, c.note,
      h('div', { class: 'agent-actions' }, c.pause, c.budget, c.rotate, c.remove));
    return c;
  }

  function hostsText(hosts) {
    if (!hosts) return null;
    const parts = [];
    const allow = (hosts.allow || []).filter((p) => p !== '*');
    if (allow.length && allow.length === (hosts.allow || []).length) parts.push(`only ${allow.join(', ')}`);
    if (hosts.deny && hosts.deny.length) parts.push(`never ${hosts.deny.join(', ')}`);
    return parts.length ? parts.join('; ') : 'any host';
  }

  // Guardrails: not budgets, shown as chips under the bars when set.
  const GUARDRAILS = [
    ['spike_max_sats', (v) => `breaker at ${satsText(v * 1000)}`, 'Spend above this within the breaker’s window (spike_window_secs, default 300 s) stops the agent until you resume it'],
    ['approve_above_sats', (v) => `approval above ${satsText(v * 1000)}`, 'A payment above this waits for the operator under “Approvals waiting”'],
    ['payments_per_minute', (v) => `≤ ${nf0.format(v)} payment${v === 1 ? '' : 's'}/min`, 'More payments in a minute are answered 429 rate-limited'],
    ['requests_per_minute', (v) => `≤ ${nf0.format(v)} request${v === 1 ? '' : 's'}/min`, 'More requests in a minute are answered 429 rate-limited'],
    ['max_price_increase_pct', (v) => `price rise ≤ ${nf0.format(v)} %`, 'A price this much above the last one paid for the service is refused (price-jump)'],
    ['max_connections', (v) => `≤ ${nf0.format(v)} connection${v === 1 ? '' : 's'}`, 'More connections open at once are refused with 429'],
  ];

  function guardrails(limits) {
    return GUARDRAILS
      .filter(([key]) => typeof limits[key] === 'number')
      .map(([key, text, tip]) => h('li', { class: 'chip', 'data-limit': key, title: `${key}: ${tip}` }, text(limits[key])));
  }

  function updateCard(c, a) {
    const name = a.agent;
    c.swatch.className = `swatch s${colorOf(name)}`;
    const paused = a.paused === true;
    const stopped = a.stopped || null;
    c.root.classList.toggle('is-paused', paused || !!stopped);
    const badges = [];
    if (stopped) {
      badges.push(h('span', { class: 'badge stopped', title: `Stopped by ${stopped.by} (${stopped.reason}): nothing is paid for it until you resume it` }, `stopped: ${stopped.reason}`));
    } else if (a.paused !== undefined) {
      badges.push(h('span', { class: paused ? 'badge paused' : 'badge active' }, paused ? 'paused' : 'active'));
    }
    if (a.managed_by) {
      badges.push(h('span', {
        class: 'badge',
        title: a.managed_by === 'config' ? 'Defined in the config file' : 'Created through the admin API',
      }, a.managed_by === 'config' ? 'config file' : 'API'));
    }
    c.badges.replaceChildren(...badges);

    const limits = a.limits || {};
    const sources = a.limit_sources || {};
    const spent = a.spent_msat || {};
    const remaining = a.remaining_msat || {};
    const rows = WINDOWS
      .filter(([w, , key]) => limits[key] !== undefined || w === 'daily' || w === 'total')
      .map(([w, label, key]) => barRow(label, spent[w], limits[key], remaining[w], sources[key]));
    // Caps per seller: one bar per window each rule sets.
    for (const seller of a.sellers || []) {
      const where = (seller.hosts || []).join(', ');
      for (const [w, label, key] of WINDOWS) {
        const cap = (seller.limits || {})[key];
        if (cap === undefined) continue;
        const row = barRow(`${label} at ${where}`, (seller.spent_msat || {})[w], cap, (seller.remaining_msat || {})[w]);
        row.classList.add('seller');
        row.setAttribute('data-seller', where);
        rows.push(row);
      }
    }
    c.bars.replaceChildren(...rows);

    const meta = [];
    if (limits.per_request_sats !== undefined) meta.push(h('span', {}, 'per request ≤ ', money(limits.per_request_sats * 1000)));
    if (a.spendable_msat !== undefined) meta.push(h('span', { title: 'The largest invoice it can pay now, fee reserve held back' }, 'can pay up to ', money(a.spendable_msat)));
    const hosts = hostsText(a.hosts);
    if (hosts) meta.push(h('span', {}, `hosts: ${hosts}`));
    if (a.last_payment_at !== undefined) {
      meta.push(h('span', {}, 'last payment ', a.last_payment_at ? timeEl(a.last_payment_at, a.last_payment_at_rfc3339, true) : 'never'));
    }
    c.meta.replaceChildren(...meta);
    const guards = guardrails(limits);
    c.guards.replaceChildren(...guards);
    c.guards.hidden = !guards.length;

    c.pause.textContent = paused || stopped ? 'Resume' : 'Pause';
    c.pause.setAttribute('aria-label', `${paused || stopped ? 'Resume' : 'Pause'} ${name}`);
    const fileManaged = a.managed_by === 'config';
    for (const b of [c.pause, c.rotate, c.remove]) {
      b.disabled = fileManaged;
      b.title = fileManaged ? 'Managed by the config file: change it there' : '';
    }
    // A tripped breaker is lifted here for any agent, config file or not.
    if (stopped) {
      c.pause.disabled = false;
      c.pause.title = '';
    }
    c.note.hidden = !fileManaged;
    c.note.textContent = fileManaged ? 'Managed by the config file: its key, limits and hosts are changed there; top-ups and recalls work here.' : '';
  }

  async function loadAgents() {
    const data = await api('GET', 'v1/agents');
    const agents = (data && data.agents) || [];
    state.agents = agents;
    assignColors(agents.map((a) => a.agent));
    const list = $('agent-list');
    if (!agents.length) {
      cards.clear();
      list.replaceChildren(h('p', { class: 'muted' }, 'No agents yet. Create one with “New agent”.'));
      sigs.delete('agent-order');
    } else {
      if (!cards.size) list.replaceChildren();
      const names = agents.map((a) => a.agent);
      for (const [name, c] of cards) {
        if (!names.includes(name)) {
          c.root.remove();
          cards.delete(name);
        }
      }
      for (const a of agents) {
        let c = cards.get(a.agent);
        if (!c) {
          c = makeCard(a.agent);
          cards.set(a.agent, c);
        }
        updateCard(c, a);
      }
      if (changed('agent-order', names)) {
        list.replaceChildren(...names.map((n) => cards.get(n).root));
      }
    }
    // The ledger's agent filter follows the agents.
    const sel = $('flt-agent');
    const known = new Set([...sel.options].map((o) => o.value));
    for (const a of agents) {
      if (!known.has(a.agent)) sel.append(h('option', { value: a.agent }, a.agent));
    }
    renderLegend();
  }

  function findAgent(name) {
    return state.agents.find((a) => a.agent === name);
  }

  async function togglePause(name, c) {
    const a = findAgent(name);
    if (a && a.stopped) {
      await busy(c.pause, async () => {
        try {
          await api('POST', `v1/agents/${enc(name)}/resume`);
          toast(`${name} is resumed: its spend-spike breaker’s stop is lifted.`);
        } catch (e) {
          if (e.status !== 401) toast(`Could not resume ${name}: ${explain(e)}`, true);
        }
      });
      refreshSoon();
      return;
    }
    const pause = !(a && a.paused === true);
    await busy(c.pause, async () => {
      try {
        const updated = await api('PATCH', `v1/agents/${enc(name)}`, { paused: pause });
        if (updated && updated.agent === name) {
          Object.assign(a || {}, updated);
          updateCard(c, updated);
        }
        toast(pause ? `${name} is paused: the proxy declines its paid requests.` : `${name} is active again.`);
      } catch (e) {
        if (e.status !== 401) toast(`Could not ${pause ? 'pause' : 'resume'} ${name}: ${explain(e)}`, true);
      }
    });
    refreshSoon();
  }

  function rotateKey(name) {
    confirmThen(
      `Rotate the key of ${name}?`,
      `A new key is made and shown once. The old key stops working at once: ${name} must be given the new one.`,
      'Rotate key',
      async () => {
        const r = await api('POST', `v1/agents/${enc(name)}/key`);
        showKey(r.name || name, r.key);
      },
    );
  }

  function deleteAgent(name) {
    confirmThen(
      `Delete ${name}?`,
      `Its key stops working at once. Its payments and declines stay in the ledger.`,
      'Delete agent',
      async () => {
        await api('DELETE', `v1/agents/${enc(name)}`);
        toast(`${name} deleted.`);
      },
    );
  }

  // ---------------------------------------------------------------- create agent, keys

  function linesOf(text) {
    return text.split(/[\s,]+/).map((l) => l.trim()).filter(Boolean);
  }

  const U32 = 4294967295;
  // [field, label, least, most, unit] of the create form's limits and guardrails.
  const NEW_AGENT_LIMITS = [
    ['per_request_sats', 'Per request', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['hourly_sats', 'Hourly', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['daily_sats', 'Daily', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['weekly_sats', 'Weekly', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['monthly_sats', 'Monthly', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['total_sats', 'Total', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['approve_above_sats', 'Approval above', 0, Number.MAX_SAFE_INTEGER, ' of sats'],
    ['payments_per_minute', 'Payments per minute', 1, U32, ''],
    ['requests_per_minute', 'Requests per minute', 1, U32, ''],
    ['max_price_increase_pct', 'Price rise (%)', 0, U32, ''],
  ];

  async function submitAgent(e) {
    e.preventDefault();
    const form = $('agent-form');
    const err = $('agent-error');
    showError(err, '');
    const name = form.elements.name.value.trim();
    if (!name) {
      showError(err, 'A name is needed.');
      form.elements.name.focus();
      return;
    }
    const body = { name };
    const limits = {};
    for (const [key, label, min, max, unit] of NEW_AGENT_LIMITS) {
      const v = form.elements[key].value.trim();
      if (v === '') continue;
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < min || n > max) {
        showError(err, `${label}: a whole number${unit}, ${nf0.format(min)} or more${max < Number.MAX_SAFE_INTEGER ? ` (at most ${nf0.format(max)})` : ''}.`);
        form.elements[key].focus();
        return;
      }
      limits[key] = n;
    }
    if (Object.keys(limits).length) body.limits = limits;
    const allow = linesOf(form.elements.allow.value);
    const deny = linesOf(form.elements.deny.value);
    if (allow.length || deny.length) body.hosts = { allow, deny };
    await busy($('agent-submit'), async () => {
      try {
        const r = await api('POST', 'v1/agents', body);
        $('agent-dialog').close();
        form.reset();
        showKey(r.name || name, r.key);
        refreshSoon();
      } catch (ex) {
        if (ex.status === 401) return;
        showError(err, ex.status === 409 ? `An agent named ${name} exists already.` : explain(ex));
      }
    });
  }

  function showKey(name, key) {
    // After a rotation the confirmation dialog is still open: the key replaces it.
    if ($('confirm-dialog').open) {
      pendingConfirm = null;
      $('confirm-dialog').close();
    }
    const { addr, guessed } = proxyAddress();
    const url = `http://${enc(name)}:${enc(key)}@${addr}`;
    $('key-agent').textContent = name;
    $('key-value').value = key;
    $('key-env').value = [
      `export HTTPS_PROXY=${url}`,
      `export https_proxy=${url}`,
      `export http_proxy=${url}`,
    ].join('\n') + (guessed ? '\n# the proxy address is a guess: this server does not say where the proxy listens' : '');
    $('key-env').rows = guessed ? 5 : 4;
    openDialog($('key-dialog'), $('key-value'));
    $('key-value').select();
  }

  async function copyFrom(id, button) {
    const el = $(id);
    const text = el.value;
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      el.focus();
      el.select();
      try { ok = document.execCommand('copy'); } catch (__) { ok = false; }
    }
    const label = button.textContent;
    button.textContent = ok ? 'Copied' : 'Select and copy by hand';
    setTimeout(() => { button.textContent = label; }, 1600);
  }

  // ---------------------------------------------------------------- budget

  let budgetAgent = null;
  function openBudget(name) {
    const a = findAgent(name);
    budgetAgent = name;
    $('budget-agent').textContent = name;
    const form = $('budget-form');
    form.reset();
    showError($('budget-error'), '');
    const cur = $('budget-current');
    const total = a && a.limits ? a.limits.total_sats : undefined;
    if (total !== undefined) {
      const spent = (a.spent_msat && a.spent_msat.total) || 0;
      const src = a.limit_sources && a.limit_sources.total_sats === 'admin' ? ' (set by an operator)' : ' (from the config)';
      cur.replaceChildren('Total limit ', money(total * 1000), src, ' · spent ', money(spent), ' · ', money(a.remaining_msat ? a.remaining_msat.total : null), ' left.');
      form.elements.op.value = 'add';
    } else {
      cur.textContent = 'No total limit: set one first, then top up or recall.';
      form.elements.op.value = 'set';
    }
    syncBudgetOp();
    openDialog($('budget-dialog'), $('budget-sats'));
  }

  function syncBudgetOp() {
    const clear = $('budget-form').elements.op.value === 'clear';
    $('budget-sats').disabled = clear;
  }

  async function submitBudget(e) {
    e.preventDefault();
    const form = $('budget-form');
    const err = $('budget-error');
    showError(err, '');
    const op = form.elements.op.value;
    let body;
    if (op === 'clear') {
      body = { total_sats: null };
    } else {
      const n = Number(form.elements.sats.value.trim());
      if (form.elements.sats.value.trim() === '' || !Number.isSafeInteger(n) || n < 0) {
        showError(err, 'A whole number of sats, 0 or more.');
        $('budget-sats').focus();
        return;
      }
      body = op === 'add' ? { add_sats: n } : op === 'recall' ? { add_sats: -n } : { total_sats: n };
    }
    const name = budgetAgent;
    await busy($('budget-submit'), async () => {
      try {
        await api('POST', `v1/agents/${enc(name)}/budget`, body);
        $('budget-dialog').close();
        toast(`Budget of ${name} changed.`);
        refreshSoon();
      } catch (ex) {
        if (ex.status !== 401) showError(err, explain(ex));
      }
    });
  }

  // ---------------------------------------------------------------- approvals

  // Held payments, one item each, kept across polls (so the focus stays on its button) and
  // removed as soon as they are decided here; `decided` keeps an answer that was already in
  // flight from bringing one back.
  const approvalItems = new Map();
  const decided = new Set();
  let countdownTimer = null;

  function timeLeftText(secs) {
    if (secs <= 0) return 'expiring…';
    const m = Math.floor(secs / 60);
    const sec = String(secs % 60).padStart(2, '0');
    return m >= 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min left` : `${m}:${sec} left`;
  }

  function updateCountdowns() {
    const t = serverNow();
    for (const item of approvalItems.values()) {
      const left = Math.max(0, item.r.expires_at - t);
      const span = Math.max(1, item.r.expires_at - item.r.created_at);
      item.left.textContent = timeLeftText(left);
      item.left.classList.toggle('urgent', left <= 15);
      item.bar.style.width = `${((left / span) * 100).toFixed(1)}%`;
      item.meter.setAttribute('aria-valuenow', String(left));
      item.meter.setAttribute('aria-valuetext', timeLeftText(left));
    }
    if (!approvalItems.size && countdownTimer) {
      clearInterval(countdownTimer);
      countdownTimer = null;
    }
  }

  function approvalLabel(r) {
    return `${satsText(r.amount_msat)} to ${r.host} for ${r.agent}`;
  }

  function makeApproval(r) {
    const item = { r };
    item.left = h('span', { class: 'time-left' });
    item.bar = h('span');
    item.meter = h('div', {
      class: 'bar', role: 'meter', 'aria-label': 'Time left', 'aria-valuemin': '0',
      'aria-valuemax': String(Math.max(1, r.expires_at - r.created_at)),
    }, item.bar);
    item.approve = h('button', { type: 'button', class: 'small', 'data-action': 'approve', 'aria-label': `Approve ${approvalLabel(r)}`, onclick: () => decide(item, true) }, 'Approve');
    item.deny = h('button', { type: 'button', class: 'danger small', 'data-action': 'deny', 'aria-label': `Deny ${approvalLabel(r)}`, onclick: () => { if (!item.busy) confirmDeny(item); } }, 'Deny');
    item.root = h('article', { class: 'approval', 'data-approval': r.id, 'data-agent': r.agent, 'aria-label': `Approval: ${approvalLabel(r)}` },
      h('div', { class: 'approval-head' },
        h('strong', { class: 'approval-amount' }, money(r.amount_msat)),
        h('span', { class: 'approval-who' }, h('span', { class: `swatch s${colorOf(r.agent)}`, 'aria-hidden': 'true' }), r.agent)),
      h('dl', { class: 'approval-facts' },
        h('div', {}, h('dt', {}, 'Host'), h('dd', {}, h('code', {}, r.host))),
        h('div', {}, h('dt', {}, 'Service'), h('dd', {}, r.service || '—')),
        h('div', {}, h('dt', {}, 'Asked'), h('dd', {}, timeEl(r.created_at, r.created_at_rfc3339))),
        h('div', {}, h('dt', {}, 'Payment hash'), h('dd', {}, shortHash(r.payment_hash)))),
      h('div', { class: 'approval-time' }, item.meter, item.left),
      h('div', { class: 'agent-actions' }, item.approve, item.deny));
    return item;
  }

  function renderApprovalCount() {
    const n = approvalItems.size;
    $('approvals-count').textContent = n ? `(${n})` : '';
    $('approvals').classList.toggle('attention', n > 0);
    $('approvals-help').hidden = n === 0;
    const banner = $('approvals-banner');
    banner.hidden = n === 0;
    const text = n === 1 ? '1 payment waits for your approval' : `${nf0.format(n)} payments wait for your approval`;
    if (n && $('approvals-banner-text').textContent !== text) $('approvals-banner-text').textContent = text;
    document.title = n ? `(${n}) l402-proxy` : 'l402-proxy';
  }

  function renderApprovalsEmpty() {
    const body = $('approvals-body');
    if (!approvalItems.size && !body.querySelector('.approvals-empty')) {
      body.replaceChildren(h('p', { class: 'muted approvals-empty' }, 'No payment waits for approval.'));
    }
  }

  async function loadApprovals() {
    const body = $('approvals-body');
    let data;
    try {
      data = await api('GET', 'v1/approvals');
    } catch (e) {
      if (!notAvailable(e)) throw e;
      for (const item of approvalItems.values()) item.root.remove();
      approvalItems.clear();
      renderApprovalCount();
      unavailable(body, 'approvals', 'Approvals are');
      return;
    }
    const rows = ((data && data.approvals) || []).filter((r) => r && r.id && (r.state || 'pending') === 'pending' && !decided.has(r.id));
    const ids = new Set(rows.map((r) => r.id));
    for (const [id, item] of approvalItems) if (!ids.has(id)) dropApproval(item);
    let list = body.querySelector('.approval-list');
    if (rows.length && !list) {
      list = h('div', { class: 'approval-list' });
      body.replaceChildren(list);
    }
    for (const r of rows) {
      if (approvalItems.has(r.id)) continue;
      const item = makeApproval(r);
      approvalItems.set(r.id, item);
      list.append(item.root);
    }
    renderApprovalCount();
    renderApprovalsEmpty();
    if (approvalItems.size) {
      updateCountdowns();
      if (!countdownTimer) countdownTimer = setInterval(updateCountdowns, 1000);
    }
  }

  /** Takes an item off the page; the focus, if it was on it, goes to the next one. */
  function dropApproval(item) {
    if (!approvalItems.has(item.r.id)) return;
    const had = item.root.contains(document.activeElement);
    // The Deny button that opened the confirmation gets the focus back when it closes.
    const dlg = $('confirm-dialog');
    const back = returnFocus.get(dlg);
    const hadViaDialog = !!back && item.root.contains(back);
    const at = [...approvalItems.keys()].indexOf(item.r.id);
    approvalItems.delete(item.r.id);
    item.root.remove();
    if (had || hadViaDialog) {
      const rest = [...approvalItems.values()];
      const next = rest.length ? rest[Math.min(at, rest.length - 1)].approve : $('approvals');
      if (hadViaDialog) returnFocus.set(dlg, next);
      else next.focus();
    }
    renderApprovalCount();
    renderApprovalsEmpty();
  }

  function confirmDeny(item) {
    const r = item.r;
    confirmThen(
      `Deny ${satsText(r.amount_msat)} to ${r.host}?`,
      `${r.agent}'s request is answered 402 with approval-denied; nothing is paid.`,
      'Deny payment',
      () => decide(item, false),
    );
  }

  async function decide(item, approve) {
    const r = item.r;
    // Busy, not disabled: a disabled button would drop the keyboard focus.
    const buttons = [item.approve, item.deny];
    if (item.busy) return;
    item.busy = true;
    for (const b of buttons) b.setAttribute('aria-disabled', 'true');
    try {
      await api('POST', `v1/approvals/${enc(r.id)}`, { approve });
      decided.add(r.id);
      toast(`${approve ? 'Approved' : 'Denied'}: ${approvalLabel(r)}.`);
      dropApproval(item);
    } catch (e) {
      if (e.status === 401) return;
      if (e.status === 409 || e.status === 404) {
        // Decided elsewhere (another operator, a script on the API) or expired: it waits no more.
        decided.add(r.id);
        toast(`Could not ${approve ? 'approve' : 'deny'} ${approvalLabel(r)}: ${e.status === 404 ? 'no such approval (expired or removed)' : e.message}.`, true);
        dropApproval(item);
      } else {
        toast(`Could not ${approve ? 'approve' : 'deny'} ${approvalLabel(r)}: ${explain(e)}`, true);
      }
    } finally {
      item.busy = false;
      for (const b of buttons) b.removeAttribute('aria-disabled');
    }
    refreshSoon();
  }

  // ---------------------------------------------------------------- tables

  function table(columns, rows) {
    return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'table, scrolls' },
      h('table', {},
        h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.cls }, c.label)))),
        h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.cls }, c.cell(r))))))));
  }

  function statusBadge(st) {
    return h('span', { class: `badge st-${st}` }, st);
  }

  function shortHash(hash) {
    return h('code', { title: hash }, hash ? `${hash.slice(0, 10)}…` : '—');
  }

  // ---------------------------------------------------------------- the ledger

  function ledgerQuery() {
    const f = $('ledger-filters').elements;
    const q = {
      agent: f.agent.value,
      host: f.host.value.trim().toLowerCase(),
      status: f.status.value,
      limit: f.limit.value,
    };
    const range = f.range.value;
    if (range === 'custom') {
      if (f.since.value) q.since = Math.floor(new Date(f.since.value).getTime() / 1000);
      if (f.until.value) q.until = Math.floor(new Date(f.until.value).getTime() / 1000);
    } else if (range !== 'all') {
      q.since = now() - Number(range);
    }
    return q;
  }

  async function loadLedger() {
    const body = $('ledger-body');
    const q = ledgerQuery();
    let data;
    try {
      data = await api('GET', `v1/payments${qs(q)}`);
    } catch (e) {
      if (notAvailable(e)) return unavailable(body, 'ledger', 'The ledger is');
      if (e.status === 400) {
        sigs.delete('ledger');
        body.replaceChildren(h('p', { class: 'error' }, e.message));
        return;
      }
      throw e;
    }
    const rows = (data && data.payments) || [];
    if (!changed('ledger', rows)) return;
    if (!rows.length) {
      body.replaceChildren(h('p', { class: 'muted' }, 'No payment matches these filters.'));
      return;
    }
    const total = rows.filter((r) => r.status !== 'failed').reduce((s, r) => s + r.amount_msat + (r.fee_msat || 0), 0);
    const limit = Number(q.limit);
    body.replaceChildren(
      table([
        { label: 'Time', cell: (r) => timeEl(r.created_at, r.created_at_rfc3339) },
        { label: 'Agent', cell: (r) => r.agent },
        { label: 'Host', cell: (r) => r.host },
        { label: 'Amount', cls: 'num', cell: (r) => money(r.amount_msat) },
        { label: 'Fee', cls: 'num', cell: (r) => money(r.fee_msat) },
        { label: 'Status', cell: (r) => statusBadge(r.status) },
        { label: 'Dialect', cell: (r) => r.dialect || '—' },
        { label: 'Payment hash', cell: (r) => shortHash(r.payment_hash) },
        { label: 'Failure', cls: 'wrap', cell: (r) => r.failure || '' },
      ], rows),
      h('p', { class: 'table-foot' },
        `${nf0.format(rows.length)} payment${rows.length === 1 ? '' : 's'}; settled and pending: `, money(total),
        rows.length >= limit ? ' · row limit reached: narrow the filters or download the CSV' : ''));
  }

  async function download(path, filename, button) {
    await busy(button, async () => {
      try {
        const res = await request('GET', path);
        if (!res.ok) {
          const text = await res.text();
          let msg = text;
          try { msg = JSON.parse(text).error || text; } catch (_) { /* plain text */ }
          throw new ApiError(res.status, msg);
        }
        const blob = await res.blob();
        const url = URL.createObjectURL(blob);
        const a = h('a', { href: url, download: filename, hidden: true });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (e) {
        if (e.status !== 401) toast(`Download failed: ${explain(e)}`, true);
      }
    });
  }

  function stamp() {
    const d = new Date();
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
  }

  // ---------------------------------------------------------------- pending, declines, audit

  async function loadPending() {
    const body = $('pending-body');
    let data;
    try {
      data = await api('GET', 'v1/payments?status=pending&limit=500');
    } catch (e) {
      if (notAvailable(e)) return unavailable(body, 'pending', 'Pending payments are');
      throw e;
    }
    const rows = (data && data.payments) || [];
    $('pending-count').textContent = rows.length ? `(${rows.length})` : '';
    if (!changed('pending', rows)) return;
    if (!rows.length) {
      body.replaceChildren(h('p', { class: 'muted' }, 'None: every payment has settled or failed.'));
      return;
    }
    body.replaceChildren(table([
      { label: 'Started', cell: (r) => timeEl(r.created_at, r.created_at_rfc3339) },
      { label: 'Agent', cell: (r) => r.agent },
      { label: 'Host', cell: (r) => r.host },
      { label: 'Amount', cls: 'num', cell: (r) => money(r.amount_msat) },
      { label: 'Last checked', cell: (r) => timeEl(r.updated_at, null, true) },
      { label: 'Payment hash', cell: (r) => shortHash(r.payment_hash) },
    ], rows));
  }

  // Declines by the guardrails, explained on hover.
  const GUARD_CODES = {
    'approval-denied': 'An operator denied the payment',
    'approval-timeout': 'Nobody approved the payment in time (approval.timeout_secs)',
    'rate-limited': 'Over requests_per_minute or payments_per_minute (answered 429 with Retry-After)',
    'price-jump': 'The price rose more than max_price_increase_pct over the last one paid',
    'policy-denied': 'The operator\'s policy service (policy_hook) denied the payment',
    'policy-unavailable': 'The operator\'s policy service did not answer in time, or not usably; on_failure is deny',
  };

  async function loadDeclines() {
    const body = $('declines-body');
    let data;
    try {
      data = await api('GET', 'v1/declines?limit=100');
    } catch (e) {
      if (notAvailable(e)) return unavailable(body, 'declines', 'Declines are');
      throw e;
    }
    const rows = (data && data.declines) || [];
    if (!changed('declines', rows)) return;
    if (!rows.length) {
      body.replaceChildren(h('p', { class: 'muted' }, 'No request has been declined.'));
      return;
    }
    body.replaceChildren(table([
      { label: 'Time', cell: (r) => timeEl(r.created_at, r.created_at_rfc3339) },
      { label: 'Agent', cell: (r) => r.agent },
      { label: 'Host', cell: (r) => r.host },
      { label: 'Code', cell: (r) => h('code', { class: GUARD_CODES[r.code] ? 'code guard' : 'code', title: GUARD_CODES[r.code] || null }, r.code) },
      { label: 'Reason', cls: 'wrap', cell: (r) => r.reason || '' },
      { label: 'Amount', cls: 'num', cell: (r) => money(r.amount_msat) },
      { label: 'Times', cls: 'num', cell: (r) => nf0.format(r.count || 1) },
      { label: 'Path', cls: 'wrap', cell: (r) => r.path || '' },
    ], rows));
  }

  async function loadAudit() {
    const body = $('audit-body');
    let data;
    try {
      data = await api('GET', 'v1/audit?limit=50');
    } catch (e) {
      if (notAvailable(e)) return unavailable(body, 'audit', 'The audit log is');
      throw e;
    }
    const rows = (data && data.audit) || [];
    if (!changed('audit', rows)) return;
    if (!rows.length) {
      body.replaceChildren(h('p', { class: 'muted' }, 'No operator action recorded yet.'));
      return;
    }
    const detail = (d) => (d === null || d === undefined ? '' : typeof d === 'string' ? d : JSON.stringify(d));
    body.replaceChildren(table([
      { label: 'Time', cell: (r) => timeEl(r.at, r.at_rfc3339) },
      { label: 'Who', cell: (r) => r.who || '—' },
      { label: 'Action', cell: (r) => h('code', {}, r.action || '') },
      { label: 'Agent', cell: (r) => r.agent || '—' },
      { label: 'Detail', cls: 'wrap', cell: (r) => detail(r.detail) },
    ], rows));
  }

  // ---------------------------------------------------------------- charts

  async function loadChartData() {
    const t = now();
    const full = t * 1000 - state.lastFullFetch > FULL_CHART_REFRESH_MS;
    const since = full ? t - 30 * DAY : t - HOUR;
    let data;
    try {
      data = await api('GET', `v1/payments?since=${since}&limit=10000`);
    } catch (e) {
      if (notAvailable(e)) {
        for (const id of ['chart-hourly', 'chart-daily', 'chart-hosts']) unavailable($(id), id, 'Payments are');
        return;
      }
      throw e;
    }
    const rows = (data && data.payments) || [];
    if (full) {
      state.payments = new Map();
      state.paymentsTruncated = rows.length >= 10000;
      state.lastFullFetch = t * 1000;
    }
    for (const p of rows) state.payments.set(p.payment_hash, p);
    for (const [k, p] of state.payments) if (p.created_at < t - 31 * DAY) state.payments.delete(k);
    panelNote('charts', state.paymentsTruncated ? 'More than 10,000 payments in 30 days: the charts show the newest 10,000.' : '');
    renderCharts(t);
  }

  function spentOf(p) {
    return p.status === 'failed' ? 0 : (p.amount_msat || 0) + (p.fee_msat || 0);
  }

  function localDayStart(unix) {
    const d = new Date(unix * 1000);
    d.setHours(0, 0, 0, 0);
    return Math.floor(d.getTime() / 1000);
  }

  const dfHour = new Intl.DateTimeFormat(undefined, { hour: '2-digit' });
  const dfHourLong = new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' });
  const dfDay = new Intl.DateTimeFormat(undefined, { month: 'numeric', day: 'numeric' });
  const dfDayLong = new Intl.DateTimeFormat(undefined, { weekday: 'short', year: 'numeric', month: 'short', day: 'numeric' });

  function renderCharts(t) {
    const payments = [...state.payments.values()].filter((p) => spentOf(p) > 0);
    const agents = [...new Set(payments.map((p) => p.agent))];
    for (const a of agents) colorOf(a);
    const order = [...state.colors.keys()].filter((a) => agents.includes(a));

    // Per hour, the last 24 (the current one last).
    const hour0 = Math.floor(t / HOUR) * HOUR - 23 * HOUR;
    const hourly = [];
    for (let i = 0; i < 24; i++) {
      const start = hour0 + i * HOUR;
      hourly.push({ start, label: dfHour.format(new Date(start * 1000)), tip: dfHourLong.format(new Date(start * 1000)), values: {} });
    }
    // Per local day, the last 30 (today last).
    const days = [];
    let dayStart = localDayStart(t);
    for (let i = 0; i < 30; i++) {
      days.unshift({ start: dayStart, label: dfDay.format(new Date(dayStart * 1000)), tip: dfDayLong.format(new Date(dayStart * 1000)), values: {} });
      dayStart = localDayStart(dayStart - 12 * HOUR);
    }
    const hosts = new Map();
    for (const p of payments) {
      const v = spentOf(p);
      const hi = Math.floor((p.created_at - hour0) / HOUR);
      if (hi >= 0 && hi < 24) hourly[hi].values[p.agent] = (hourly[hi].values[p.agent] || 0) + v;
      if (p.created_at >= days[0].start) {
        let di = days.length - 1;
        while (di > 0 && p.created_at < days[di].start) di--;
        days[di].values[p.agent] = (days[di].values[p.agent] || 0) + v;
        if (!hosts.has(p.host)) hosts.set(p.host, { label: p.host, tip: p.host, values: {} });
        const hv = hosts.get(p.host).values;
        hv[p.agent] = (hv[p.agent] || 0) + v;
      }
    }
    const total = (b) => Object.values(b.values).reduce((s, v) => s + v, 0);
    let hostRows = [...hosts.values()].sort((a, b) => total(b) - total(a));
    if (hostRows.length > 12) {
      const rest = { label: `${hostRows.length - 11} other hosts`, tip: 'other hosts', values: {} };
      for (const r of hostRows.slice(11)) for (const [a, v] of Object.entries(r.values)) rest.values[a] = (rest.values[a] || 0) + v;
      hostRows = hostRows.slice(0, 11).concat([rest]);
    }
    if (changed('chart-hourly', [order, hourly])) draw($('chart-hourly'), (w) => drawColumns($('chart-hourly'), w, hourly, order, 'Hour'));
    if (changed('chart-daily', [order, days])) draw($('chart-daily'), (w) => drawColumns($('chart-daily'), w, days, order, 'Day'));
    if (changed('chart-hosts', [order, hostRows])) draw($('chart-hosts'), (w) => drawHosts($('chart-hosts'), w, hostRows, order));
    renderLegend();
  }

  // Charts are drawn at the width they are shown (one SVG unit a CSS pixel, so text keeps its
  // size on a phone), and again when that width changes.
  const drawings = new Map();
  const resized = typeof ResizeObserver === 'function' ? new ResizeObserver((entries) => {
    for (const e of entries) {
      const d = drawings.get(e.target);
      const w = chartWidth(e.target);
      if (d && Math.abs(w - d.width) > 4) {
        d.width = w;
        d.fn(w);
      }
    }
  }) : null;
  function chartWidth(box) {
    return Math.max(260, Math.round(box.clientWidth || 640));
  }
  function draw(box, fn) {
    if (!drawings.has(box) && resized) resized.observe(box);
    const width = chartWidth(box);
    drawings.set(box, { fn, width });
    fn(width);
  }

  function renderLegend() {
    const names = [...state.colors.keys()];
    if (!changed('legend', [...state.colors])) return;
    $('legend').replaceChildren(...names.map((n) => h('span', {}, h('span', { class: `swatch s${state.colors.get(n)}`, 'aria-hidden': 'true' }), n)));
  }

  /** A y scale for amounts up to `msat`: a round step (1, 2 or 5 × 10^n sats) and its top. */
  function niceScale(msat) {
    const sats = msat > 0 ? Math.max(msat / 1000, 0.005) : 10;
    const raw = sats / 5;
    const p = 10 ** Math.floor(Math.log10(raw));
    const step = Math.max(0.001, [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw));
    const ticks = Math.max(1, Math.ceil(sats / step - 1e-9));
    return { step: step * 1000, top: ticks * step * 1000, ticks };
  }

  function dataTable(buckets, order, firstLabel) {
    const total = (b) => Object.values(b.values).reduce((s, v) => s + v, 0);
    const rows = buckets.filter((b) => total(b) > 0);
    if (!rows.length) return null;
    return h('details', {},
      h('summary', {}, 'As a table'),
      table([
        { label: firstLabel, cell: (b) => b.tip },
        ...order.map((a) => ({ label: a, cls: 'num', cell: (b) => (b.values[a] ? money(b.values[a]) : '') })),
        { label: 'Total', cls: 'num', cell: (b) => money(total(b)) },
      ], rows));
  }

  /** Stacked columns, one per bucket, one colour per agent. */
  function drawColumns(box, W, buckets, order, firstLabel) {
    const H = 230;
    const L = 54;
    const R = 6;
    const T = 10;
    const B = 24;
    const totals = buckets.map((b) => Object.values(b.values).reduce((s, v) => s + v, 0));
    const sum = totals.reduce((s, v) => s + v, 0);
    const scale = niceScale(Math.max(0, ...totals));
    const max = scale.top;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const slot = (W - L - R) / buckets.length;
    const bw = Math.max(2, slot * 0.72);
    // A label every so many buckets, the newest always labelled.
    const labelEvery = Math.max(1, Math.ceil(42 / slot));
    const svg = s('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img',
      'aria-label': `${firstLabel === 'Hour' ? 'Spend per hour, last 24 hours' : 'Spend per day, last 30 days'}: ${satsText(sum)} in all`,
    });
    for (let i = 0; i <= scale.ticks; i++) {
      const v = scale.step * i;
      svg.append(
        s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        s('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, compactSats(v)));
    }
    buckets.forEach((b, i) => {
      const x = L + i * slot + (slot - bw) / 2;
      let acc = 0;
      for (const a of order) {
        const v = b.values[a];
        if (!v) continue;
        const y0 = y(acc);
        const y1 = y(acc + v);
        acc += v;
        svg.append(s('rect', { class: `s${colorOf(a)}`, x: x.toFixed(1), y: y1.toFixed(1), width: bw.toFixed(1), height: Math.max(0.5, y0 - y1).toFixed(1), rx: 1.5 },
          s('title', {}, `${b.tip}\n${a}: ${satsText(v)}`)));
      }
      if (i % labelEvery === (buckets.length - 1) % labelEvery) {
        svg.append(s('text', { class: 'axis', x: (L + i * slot + slot / 2).toFixed(1), y: H - 7, 'text-anchor': 'middle' }, b.label));
      }
    });
    svg.append(s('text', { class: 'axis', x: 4, y: T + 4 }, 'sats'));
    if (sum === 0) {
      svg.append(s('text', { class: 'empty', x: (L + W) / 2, y: H / 2, 'text-anchor': 'middle' }, 'No spend in this period'));
    }
    box.replaceChildren(svg, dataTable(buckets, order, firstLabel) || '');
  }

  /** Stacked horizontal bars, one per host. */
  function drawHosts(box, W, rows, order) {
    const rowH = 24;
    const L = Math.round(Math.min(220, W * 0.38));
    const R = 92;
    const maxChars = Math.max(8, Math.floor((L - 10) / 7));
    const totals = rows.map((b) => Object.values(b.values).reduce((s, v) => s + v, 0));
    const max = Math.max(1, ...totals);
    const H = Math.max(1, rows.length) * rowH + 8;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Spend per host, last 30 days: ${rows.length} hosts` });
    if (!rows.length) {
      svg.append(s('text', { class: 'empty', x: W / 2, y: 20, 'text-anchor': 'middle' }, 'No spend in the last 30 days'));
    }
    rows.forEach((r, i) => {
      const yTop = 4 + i * rowH;
      const label = r.label.length > maxChars ? `${r.label.slice(0, maxChars - 1)}…` : r.label;
      svg.append(s('text', { class: 'hostlabel', x: L - 8, y: yTop + 16, 'text-anchor': 'end' }, s('title', {}, r.label), label));
      let acc = 0;
      for (const a of order) {
        const v = r.values[a];
        if (!v) continue;
        const x0 = L + (W - L - R) * (acc / max);
        const w = Math.max(1, (W - L - R) * (v / max));
        acc += v;
        svg.append(s('rect', { class: `s${colorOf(a)}`, x: x0.toFixed(1), y: yTop + 3, width: w.toFixed(1), height: rowH - 8, rx: 2 },
          s('title', {}, `${r.label}\n${a}: ${satsText(v)}`)));
      }
      const xEnd = L + (W - L - R) * (acc / max);
      svg.append(s('text', { class: 'axis', x: (xEnd + 6).toFixed(1), y: yTop + 16 }, satsText(totals[i])));
    });
    box.replaceChildren(svg, dataTable(rows, order, 'Host') || '');
  }

  // ---------------------------------------------------------------- polling

  let timer = null;
  let running = false;
  let again = false;

  function setLive(cls, text) {
    const el = $('live');
    el.className = `live ${cls}`;
    el.textContent = text;
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  }

  function refreshSoon() {
    if (running) again = true;
    else schedule(0);
  }

  async function tick() {
    clearTimeout(timer);
    timer = null;
    if (!getToken()) return;
    if (document.hidden) {
      setLive('off', 'paused while the tab is hidden');
      return;
    }
    if (running) {
      again = true;
      return;
    }
    running = true;
    again = false;
    let failure = null;
    try {
      // Agents first: the overview and the colours use them.
      const first = await Promise.allSettled([loadAgents()]);
      const rest = await Promise.allSettled([loadStatus(), loadApprovals(), loadLedger(), loadPending(), loadDeclines(), loadAudit(), loadChartData()]);
      const names = ['agents', 'overview', 'approvals', 'ledger', 'pending', 'declines', 'audit', 'charts'];
      [...first, ...rest].forEach((r, i) => {
        const name = names[i];
        if (r.status === 'rejected') {
          const e = r.reason;
          if (e && e.status === 401) failure = failure || e;
          else {
            failure = failure || e;
            panelNote(name, `Could not refresh: ${explain(e)}`);
          }
        } else if (name !== 'overview' && name !== 'charts') {
          panelNote(name, '');
        }
      });
    } finally {
      running = false;
    }
    if (!getToken()) return;
    if (failure && failure.status === 0) setLive('err', 'the admin API does not answer; retrying');
    else if (failure) setLive('err', `updated ${dfTime.format(new Date())}, with errors`);
    else setLive('on', `live · updated ${dfTime.format(new Date())}`);
    if (document.hidden) {
      setLive('off', 'paused while the tab is hidden');
      return;
    }
    schedule(again ? 0 : POLL_MS);
  }

  document.addEventListener('visibilitychange', () => {
    if (!getToken()) return;
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
      setLive('off', 'paused while the tab is hidden');
    } else {
      refreshSoon();
    }
  });

  // ---------------------------------------------------------------- sign in and out

  function signedIn(yes) {
    $('signin').hidden = yes;
    $('signout').hidden = !yes;
    $('pause-all').hidden = !yes || state.fleetPaused === true;
  }

  function unauthorized() {
    setToken(null);
    clearTimeout(timer);
    timer = null;
    signedIn(false);
    setLive('err', 'not signed in');
    openLogin('The admin token was refused. Sign in again.');
  }

  function openLogin(message) {
    showError($('login-error'), message || '');
    $('login-token').value = '';
    openDialog($('login-dialog'), $('login-token'));
  }

  async function submitLogin(e) {
    e.preventDefault();
    const token = $('login-token').value.trim();
    if (!token) {
      showError($('login-error'), 'Enter the admin token.');
      return;
    }
    await busy($('login-submit'), async () => {
      setToken(token);
      try {
        await api('GET', 'v1/agents');
      } catch (ex) {
        if (ex.status === 401) {
          setToken(null);
          showError($('login-error'), 'That token was refused.');
          $('login-token').select();
          return;
        }
        // Anything else: the token may be fine; the panels will say what is wrong.
      }
      $('login-dialog').close();
      start();
    });
  }

  function start() {
    signedIn(true);
    setLive('', 'connecting…');
    refreshSoon();
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    for (const dlg of document.querySelectorAll('dialog')) setupDialog(dlg);
    $('login-form').addEventListener('submit', submitLogin);
    $('signin').addEventListener('click', () => openLogin(''));
    $('signout').addEventListener('click', () => {
      setToken(null);
      location.replace(location.pathname);
    });
    $('pause-all').addEventListener('click', pauseAll);
    $('resume-all').addEventListener('click', resumeAll);
    $('new-agent').addEventListener('click', () => {
      $('agent-form').reset();
      showError($('agent-error'), '');
      openDialog($('agent-dialog'), $('agent-name'));
    });
    $('agent-form').addEventListener('submit', submitAgent);
    $('approvals-review').addEventListener('click', (e) => {
      e.preventDefault();
      const panel = $('approvals');
      panel.scrollIntoView({ block: 'start', behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth' });
      panel.focus({ preventScroll: true });
    });
    $('budget-form').addEventListener('submit', submitBudget);
    $('budget-form').addEventListener('change', syncBudgetOp);
    $('confirm-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const action = pendingConfirm;
      if (!action) return;
      await busy($('confirm-ok'), async () => {
        try {
          await action();
          pendingConfirm = null;
          if ($('confirm-dialog').open) $('confirm-dialog').close();
          refreshSoon();
        } catch (ex) {
          if (ex.status !== 401) showError($('confirm-error'), explain(ex));
        }
      });
    });
    $('confirm-dialog').addEventListener('close', () => { pendingConfirm = null; });
    $('key-dialog').addEventListener('close', () => { $('key-value').value = ''; $('key-env').value = ''; });
    for (const b of document.querySelectorAll('[data-copy]')) {
      b.addEventListener('click', () => copyFrom(b.getAttribute('data-copy'), b));
    }

    const filters = $('ledger-filters');
    let hostTimer = null;
    const reloadLedger = () => {
      sigs.delete('ledger');
      refreshSoon();
    };
    filters.addEventListener('submit', (e) => {
      e.preventDefault();
      reloadLedger();
    });
    filters.addEventListener('change', (e) => {
      if (e.target.name === 'range') {
        const custom = e.target.value === 'custom';
        for (const el of filters.querySelectorAll('.custom-range')) el.hidden = !custom;
      }
      if (e.target.name !== 'host') reloadLedger();
    });
    $('flt-host').addEventListener('input', () => {
      clearTimeout(hostTimer);
      hostTimer = setTimeout(reloadLedger, 400);
    });
    $('ledger-csv').addEventListener('click', (e) => {
      const q = ledgerQuery();
      q.format = 'csv';
      download(`v1/payments${qs(q)}`, `l402-payments-${stamp()}.csv`, e.currentTarget);
    });
    $('declines-csv').addEventListener('click', (e) => {
      download('v1/declines?format=csv&limit=10000', `l402-declines-${stamp()}.csv`, e.currentTarget);
    });

    window.addEventListener('hashchange', () => {
      if (takeTokenFromFragment()) {
        if ($('login-dialog').open) $('login-dialog').close();
        start();
      }
    });

    takeTokenFromFragment();
    if (getToken()) start();
    else {
      setLive('', 'not signed in');
      openLogin('');
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
