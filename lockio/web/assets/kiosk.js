// The kiosk: a keypad for a code, then the locker's answer in plain words.
// Codes go to the locker exactly as the touchscreen's do.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const MIN = 4, MAX = 12;
  const resetAfter = Number(document.body.dataset.resetAfterMs) || 6000;
  const code = $('code'), result = $('result'), text = $('result-text'), detail = $('result-detail');
  const okKey = $('key-ok'), resultOk = $('result-ok');
  let digits = '';
  let mode = 'entry'; // entry, waiting, result, locked
  let resetTimer = 0, countdownTimer = 0;

  function showCode() {
    code.dataset.empty = digits ? 'false' : 'true';
    code.textContent = digits || '––––––';
    okKey.disabled = digits.length < MIN || mode !== 'entry';
  }

  function setKeypad(enabled) {
    for (const b of document.querySelectorAll('#keypad button')) b.disabled = !enabled;
    if (enabled) okKey.disabled = digits.length < MIN;
  }

  function press(d) {
    if (mode === 'result') reset();
    if (mode !== 'entry' || digits.length >= MAX) return;
    digits += d;
    showCode();
  }

  function back() {
    if (mode !== 'entry') return;
    digits = digits.slice(0, -1);
    showCode();
  }

  function reset() {
    clearTimeout(resetTimer);
    clearInterval(countdownTimer);
    mode = 'entry';
    digits = '';
    // The result's OK button has the focus: hidden, it would keep it until
    // the browser next renders, and take the Enter of the next code as a
    // click on itself, resetting the kiosk again and losing the code.
    if (result.contains(document.activeElement)) document.activeElement.blur();
    result.hidden = true;
    result.dataset.result = '';
    setKeypad(true);
    showCode();
  }

  // words returns the headline and the detail for a display answer.
  function words(d) {
    const door = d.door ? `Door ${d.door}` : 'The door';
    switch (d.result) {
      case 'opened': return [`${door} is open — please close it when done`, 'Thank you.'];
      case 'invalid_code': return ['This code is not valid', 'Check the code and try again.'];
      case 'expired': return ['This code has expired', 'The parcel goes back to the sender.'];
      case 'door_fault': return [`${door} did not open`, 'Your code is still valid. Please try again or contact support.'];
      case 'busy': return [`${door} is in use`, 'Please try again in a moment.'];
      case 'bad_request': return ['This code cannot be read', d.message || ''];
      default: return [d.message || 'The locker did not answer', 'Please try again.'];
    }
  }

  function show(d) {
    mode = 'result';
    result.dataset.result = d.result;
    result.hidden = false;
    if (d.result === 'locked_out') {
      lockout(d.retry_after_s || 60);
      return;
    }
    const [head, more] = words(d);
    text.textContent = head;
    detail.textContent = more;
    resultOk.hidden = false;
    $('announce').textContent = `${head}. ${more}`;
    resultOk.focus();
    resetTimer = setTimeout(reset, resetAfter);
  }

  function lockout(seconds) {
    mode = 'locked';
    setKeypad(false);
    const until = performance.now() + seconds * 1000;
    const count = document.createElement('span');
    count.className = 'countdown';
    count.id = 'countdown';
    count.textContent = String(seconds);
    text.replaceChildren('Too many attempts, try again in ', count, ' s');
    detail.textContent = 'The keypad is locked for a while after several wrong codes.';
    resultOk.hidden = true;
    $('announce').textContent = `Too many attempts, try again in ${seconds} seconds.`;
    countdownTimer = setInterval(() => {
      const left = Math.ceil((until - performance.now()) / 1000);
      if (left <= 0) {
        reset();
        return;
      }
      count.textContent = String(left);
    }, 250);
  }

  async function submit() {
    if (mode !== 'entry' || digits.length < MIN) return;
    mode = 'waiting';
    setKeypad(false);
    code.textContent = 'Checking…';
    let d;
    try {
      const resp = await fetch('/api/kiosk/code', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ code: digits }),
      });
      if (!resp.ok) throw new Error((await resp.text()).trim());
      d = await resp.json();
    } catch (err) {
      d = { result: 'error', message: 'The locker did not answer' };
    }
    digits = '';
    show(d);
  }

  document.getElementById('keypad').addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (!b || b.disabled) return;
    if (b.dataset.digit !== undefined) press(b.dataset.digit);
    else if (b === okKey) submit();
    else if (b.id === 'key-back') back();
  });
  resultOk.addEventListener('click', reset);

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    // A focused button acts on Enter and Space by itself.
    if ((e.key === 'Enter' || e.key === ' ') && e.target instanceof HTMLButtonElement) return;
    if (/^[0-9]$/.test(e.key)) press(e.key);
    else if (e.key === 'Backspace') back();
    else if (e.key === 'Enter') submit();
    else if (e.key === 'Escape') { if (mode === 'result') reset(); else if (mode === 'entry') { digits = ''; showCode(); } }
    else return;
    e.preventDefault();
  });

  showCode();
})();
