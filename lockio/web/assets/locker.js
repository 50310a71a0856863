// The locker page: one tile per door, redrawn from the state the server
// streams on /events at every change. No polling.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const stateWords = { open: 'Open', closed: 'Closed', fault: 'Fault', unknown: 'No report yet' };
  const seen = new Map(); // door → last state, to announce changes
  let uptime = { base: 0, at: 0 };
  const drawn = { doors: '', free: '' }; // what the page shows now

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'id' || k === 'type' || k === 'role') e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function parcel(r) {
    if (!r) return { status: 'none', text: 'Empty' };
    if (r.status === 'stored') return { status: 'stored', text: 'Parcel inside' };
    if (r.status === 'arriving') return { status: 'arriving', text: 'Parcel expected' };
    return { status: r.status, text: r.status };
  }

  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`;
    if (m > 0) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
    return `${Math.floor(s)} s`;
  }

  function showUptime() {
    if (!uptime.at) return;
    $('uptime').textContent = duration(uptime.base + (performance.now() - uptime.at) / 1000);
  }

  // A fault is the operator's alarm: the tile says so with its reason in
  // plain text, not only in a tooltip. The server holds a door that did not
  // open on command at fault until it works again (state.go, onEvent);
  // `reported` is then what the door itself says (closed, for a jammed lock).
  const faulted = (d) => d.state === 'fault';
  const stateText = (d) => faulted(d) && d.reason ? `Fault: ${d.reason}` : (stateWords[d.state] || d.state);

  function tile(d, canClose) {
    const p = parcel(d.reservation);
    const clickable = canClose && (d.reported || d.state) === 'open';
    const label = [`Door ${d.id}`, d.size ? `size ${d.size}` : '', d.partner ? `partner ${d.partner}` : 'no partner',
      stateText(d), d.reported ? `reported ${stateWords[d.reported] || d.reported}` : '', p.text].filter(Boolean).join(', ');
    const t = el(clickable ? 'button' : 'div', {
      class: 'tile', id: `door-${d.id}`, 'data-door': d.id, 'data-state': d.state,
      'data-disabled': d.disabled ? 'true' : null, type: clickable ? 'button' : null,
      'aria-label': clickable ? `${label}. Close door ${d.id}` : label,
      role: clickable ? null : 'group',
    },
      el('span', { class: 'tile-head' },
        el('span', { class: 'tile-num' }, String(d.id)),
        el('span', { class: 'tile-size' }, d.size || '')),
      el('span', { class: 'tile-partner', 'data-none': d.partner ? null : 'true' }, d.partner ? d.partner : 'no partner'),
      el('span', { class: 'pill state', title: d.reason || '' }, stateWords[d.state] || d.state),
      faulted(d) && d.reason ? el('span', { class: 'tile-reason', title: d.reason }, d.reason) : null,
      el('span', { class: 'pill parcel', 'data-status': p.status }, p.text),
      d.reservation && d.reservation.test ? el('span', { class: 'test-mark' }, d.reservation.id) : null,
      d.disabled ? el('span', { class: 'test-mark' }, 'disabled') : null,
      clickable ? el('span', { class: 'tile-hint', 'aria-hidden': 'true' }, 'Click to close') : null,
    );
    return el('li', {}, t);
  }

  function render(s) {
    $('locker-id').textContent = s.locker_id;
    $('version').textContent = s.version || '–';
    $('clients').textContent = s.clients === undefined ? '–' : String(s.clients);
    const bridge = $('bridge');
    bridge.textContent = { up: 'up', down: 'down', none: 'no bridge' }[s.bridge] || s.bridge;
    bridge.dataset.state = s.bridge;
    // Without a bridge nothing sends the outbox: say so, rather than show a
    // count that only grows.
    const outbox = $('outbox');
    outbox.dataset.bridge = s.bridge;
    if (s.bridge === 'none') {
      outbox.textContent = `${s.outbox} kept, no bridge`;
      $('outbox-figure').title = 'No cloud bridge is configured (--cloud-url): the events and acks for the back-end ' +
        'are kept in the outbox, not sent, the oldest dropped past --outbox-max-bytes or --outbox-max-age. ' +
        'A bridge sends them once the gateway runs with one.';
    } else {
      outbox.textContent = String(s.outbox);
      $('outbox-figure').title = "Upstream messages (events, acks) waiting for the cloud broker's acknowledgement";
    }
    uptime = { base: s.uptime_s, at: performance.now() };
    showUptime();

    // Redraw the tiles only when a door changed, so that a status refresh
    // neither steals the focus nor swallows a click.
    const doorsKey = JSON.stringify([s.can_close, s.doors]);
    if (doorsKey !== drawn.doors) {
      drawn.doors = doorsKey;
      const focused = document.activeElement && document.activeElement.closest('.tile');
      const focusedDoor = focused ? focused.dataset.door : null;
      $('doors').replaceChildren(...s.doors.map((d) => tile(d, s.can_close)));
      if (focusedDoor) {
        const again = $(`door-${focusedDoor}`);
        if (again && again.tagName === 'BUTTON') again.focus();
      }
    }

    const changes = [];
    for (const d of s.doors) {
      const now = faulted(d) ? `fault ${d.reason || ''}` : d.state;
      const before = seen.get(d.id);
      if (before !== undefined && before !== now) {
        changes.push(faulted(d) ? `Door ${d.id} has a fault${d.reason ? ': ' + d.reason : ''}.`
          : `Door ${d.id} is ${(stateWords[d.state] || d.state).toLowerCase()}.`);
      }
      seen.set(d.id, now);
    }
    if (changes.length) $('announce').textContent = changes.join(' ');

    const ev = s.last_event;
    $('last-event').textContent = ev ? `Last event: ${ev.type}${ev.door ? ' · door ' + ev.door : ''}` +
      `${ev.reservation ? ' · ' + ev.reservation : ''}${ev.status ? ' · ' + ev.status : ''}` +
      ` · ${new Date(ev.at).toLocaleTimeString()}` : '';

    const select = $('test-door');
    const free = s.doors.filter((d) => !d.reservation && !d.disabled);
    const freeKey = JSON.stringify(free.map((d) => [d.id, d.size, d.partner]));
    if (select && freeKey !== drawn.free) {
      drawn.free = freeKey;
      const keep = select.value;
      select.replaceChildren(...free.map((d) => el('option', { value: String(d.id) },
        `Door ${d.id}${d.size ? ' (' + d.size + ')' : ''}${d.partner ? ' · ' + d.partner : ''}`)));
      if (free.some((d) => String(d.id) === keep)) select.value = keep;
      if (free.length === 0) select.append(el('option', { value: '' }, 'No free door'));
      $('create-reservation').disabled = free.length === 0;
    }
  }

  async function post(url, body) {
    const resp = await fetch(url, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: body === undefined ? '' : JSON.stringify(body),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(text.trim() || `${resp.status} ${resp.statusText}`);
    return text ? JSON.parse(text) : null;
  }

  function toolResult(text, error) {
    const r = $('tool-result');
    if (!r) { $('announce').textContent = text; return; }
    r.textContent = text;
    r.dataset.error = error ? 'true' : 'false';
  }

  $('doors').addEventListener('click', async (e) => {
    const t = e.target.closest('button.tile');
    if (!t) return;
    t.disabled = true;
    try {
      await post(`/api/doors/${t.dataset.door}/close`);
    } catch (err) {
      toolResult(`Door ${t.dataset.door} did not close: ${err.message}`, true);
      t.disabled = false;
    }
  });

  const form = $('create-form');
  if (form) {
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const door = Number($('test-door').value);
      if (!door) return;
      const button = $('create-reservation');
      button.disabled = true;
      toolResult(`Creating a test reservation for door ${door}…`, false);
      try {
        const r = await post('/api/test/reservations', { door });
        $('codes-id').textContent = r.id;
        $('codes-door').textContent = String(r.door);
        $('code-deposit').textContent = r.deposit_code;
        $('code-pickup').textContent = r.pickup_code;
        $('code-courier').textContent = r.courier_code;
        // The codes are in the dialog only, and only until it closes.
        toolResult(`Created ${r.id} for door ${r.door}.`, false);
        $('codes-dialog').showModal();
      } catch (err) {
        toolResult(`No test reservation: ${err.message}`, true);
      } finally {
        button.disabled = false;
      }
    });
    $('codes-dialog').addEventListener('close', () => {
      for (const id of ['code-deposit', 'code-pickup', 'code-courier']) $(id).textContent = '';
    });
    $('cleanup').addEventListener('click', async () => {
      toolResult('Removing test data…', false);
      try {
        const r = await post('/api/test/cleanup');
        const kept = Object.entries(r.kept || {});
        let text = `Removed ${r.deleted.length} test reservation${r.deleted.length === 1 ? '' : 's'}.`;
        if (kept.length) text += ' Kept: ' + kept.map(([id, why]) => `${id} (${why})`).join('; ') + '.';
        toolResult(text, false);
      } catch (err) {
        toolResult(`Test data not removed: ${err.message}`, true);
      }
    });
  }

  const link = $('link');
  const events = new EventSource('/events');
  events.addEventListener('state', (e) => {
    render(JSON.parse(e.data));
    link.dataset.state = 'live';
    link.textContent = 'Live';
  });
  events.addEventListener('error', () => {
    link.dataset.state = 'lost';
    link.textContent = 'Connection lost, reconnecting…';
  });
  setInterval(showUptime, 1000);
})();
