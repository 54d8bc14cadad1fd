// Drives the admin dashboard in Debian's headless Chromium (npm playwright-core, no browser
// download) for tests/dashboard.rs, as an operator would. SCENARIO=manage (the default): sign
// in, watch a payment arrive, create an agent, hand its key to the proxy, pause it, and so on;
// SCENARIO=approvals: approve and deny payments held above approve_above_sats;
// SCENARIO=policy: the policy service (policy_hook) in the overview and its declines.
// SCENARIO=fleet: the kill switch (pause and resume every payment) and a tripped breaker.
//
// Talks to the Rust test on stdin/stdout, one line each:
//   we print  LOG <text>                   progress, shown by the test on failure
//             ASK <id> <json>              the test does something through the proxy (a paid
//                                          request with an agent's key; one that waits for an
//                                          approval, in the background, then its outcome) and
//                                          checks the result; it answers "<id> <json>" on our
//                                          stdin
//             SHOT <path>                  a screenshot was written
//             DONE                         every step passed
//   and exit non-zero with the reason on stderr when a step fails.
//
// Env: ADMIN_URL (http://127.0.0.1:PORT), ADMIN_TOKEN, OUT_DIR (screenshots, the browser
// profile), DOCS_SCREENSHOT (optional: also write the README's screenshot there),
// CHROMIUM (default /usr/bin/chromium), SELLER_HOST (host:port of the demo seller),
// DECLINE_CODE (the code of the decline the test made before the browser opened).
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const ADMIN = process.env.ADMIN_URL;
const TOKEN = process.env.ADMIN_TOKEN;
const OUT = process.env.OUT_DIR;
const SELLER = process.env.SELLER_HOST;
const DECLINE_CODE = process.env.DECLINE_CODE;
const SCENARIO = process.env.SCENARIO || 'manage';
const STEP_TIMEOUT = 15000;
if (!ADMIN || !TOKEN || !OUT || !SELLER) {
  console.error('ADMIN_URL, ADMIN_TOKEN, OUT_DIR and SELLER_HOST are required');
  process.exit(2);
}

const log = (...a) => console.log('LOG', ...a);
const fail = (msg) => {
  throw new Error(msg);
};
const expect = (cond, msg) => {
  if (!cond) fail(msg);
};

// ------------------------------------------------------------------ asking the Rust side
const answers = new Map();
let nextId = 1;
createInterface({ input: process.stdin }).on('line', (line) => {
  const sp = line.indexOf(' ');
  const id = line.slice(0, sp);
  const waiter = answers.get(id);
  if (waiter) {
    answers.delete(id);
    waiter(JSON.parse(line.slice(sp + 1)));
  }
});
function ask(request) {
  const id = String(nextId++);
  return new Promise((resolve) => {
    answers.set(id, resolve);
    console.log('ASK', id, JSON.stringify(request));
  });
}
async function pay(agent, key, path, expectOutcome) {
  const r = await ask({ do: 'pay', agent, key, path, expect: expectOutcome });
  expect(r.ok, `paying ${path} as ${agent}: wanted ${expectOutcome}, got ${JSON.stringify(r)}`);
  return r;
}

// ------------------------------------------------------------------ the browser
const profile = mkdtempSync(join(OUT, 'chromium-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
  colorScheme: 'light',
  timezoneId: 'UTC',
  locale: 'en-GB',
});
context.setDefaultTimeout(STEP_TIMEOUT);

// Nothing may leave the admin origin, and the page must raise no error or CSP violation.
const strays = [];
const problems = [];
context.on('request', (r) => {
  const url = r.url();
  if (!url.startsWith(`${ADMIN}/`) && !url.startsWith('blob:') && !url.startsWith('data:')) strays.push(url);
});
function watch(page, name) {
  page.on('pageerror', (e) => problems.push(`${name}: uncaught ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (/Content Security Policy|Refused to/i.test(t)) problems.push(`${name}: ${t}`);
    else if (m.type() === 'error' && !/Failed to load resource/.test(t)) problems.push(`${name}: console error ${t}`);
  });
  return page;
}

const shots = [];
async function shot(page, file, opts = {}) {
  const path = join(OUT, file);
  await page.screenshot({ path, ...opts });
  shots.push(path);
  console.log('SHOT', path);
  return path;
}

const card = (page, name) => page.locator(`article[data-agent="${name}"]`);
const ledgerRows = (page, text) => page.locator('#ledger-body tbody tr', { hasText: text });

async function waitFor(what, fn, timeout = STEP_TIMEOUT) {
  const until = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > until) fail(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ------------------------------------------------------------------ scenario "manage"
async function manage() {
  // ---------------------------------------------------------------- 1. sign in at the prompt
  log('1. the prompt asks for the token; a wrong one is refused, the right one is kept in the tab');
  const first = watch(context.pages()[0] || (await context.newPage()), 'tab 1');
  const t0 = Date.now();
  await first.goto(`${ADMIN}/`);
  await first.locator('#login-dialog[open]').waitFor();
  expect(await first.evaluate(() => document.activeElement && document.activeElement.id) === 'login-token',
    'the token field has the focus');
  await first.locator('#login-token').fill('not-the-token');
  await first.locator('#login-token').press('Enter');
  await first.locator('#login-error', { hasText: 'refused' }).waitFor();
  await first.locator('#login-token').fill(TOKEN);
  await first.locator('#login-token').press('Enter');
  await first.locator('#login-dialog[open]').waitFor({ state: 'detached' });
  expect(await first.evaluate(() => sessionStorage.getItem('l402-proxy-admin-token')) === TOKEN,
    'the token is in sessionStorage');
  await card(first, 'alice').waitFor();
  await card(first, 'bob').waitFor();
  log(`   signed in, agents shown after ${Date.now() - t0} ms`);

  // The payment made before the browser opened is in the ledger, with its seller host.
  await ledgerRows(first, 'alice').filter({ hasText: SELLER }).first().waitFor();
  if (DECLINE_CODE) await first.locator('#declines-body tbody tr', { hasText: DECLINE_CODE }).first().waitFor();

  // Live: a payment made now shows up without a reload.
  const before = await ledgerRows(first, 'alice').count();
  const t1 = Date.now();
  await pay('alice', 'alice-key', '/stocks/live', 'paid');
  await waitFor('the new payment in the ledger', async () => (await ledgerRows(first, 'alice').count()) > before);
  log(`   a new payment appeared after ${Date.now() - t1} ms`);

  // ---------------------------------------------------------------- 2. #token= for scripts
  log('2. a new tab signs in with #token=, which is then wiped from the address');
  const page = watch(await context.newPage(), 'tab 2');
  await page.goto(`${ADMIN}/#token=${encodeURIComponent(TOKEN)}`);
  await card(page, 'alice').waitFor();
  expect(!(await page.locator('#login-dialog[open]').count()), 'no prompt with #token=');
  expect(!page.url().includes('token'), `the token left the address: ${page.url()}`);
  expect(await page.evaluate(() => location.hash) === '', 'the fragment is cleared');
  await first.close();

  // ---------------------------------------------------------------- 3. create an agent
  log('3. create carol in the form (keyboard only), read her key once');
  const newAgent = page.getByRole('button', { name: 'New agent', exact: true });
  await newAgent.focus();
  await page.keyboard.press('Enter');
  await page.locator('#agent-dialog[open]').waitFor();
  expect(await page.evaluate(() => document.activeElement.id) === 'agent-name', 'the name field has the focus');
  await page.keyboard.type('carol');
  await page.locator('#agent-form input[name="daily_sats"]').fill('500');
  await page.locator('#agent-form input[name="total_sats"]').fill('2000');
  await page.locator('#agent-form input[name="total_sats"]').press('Enter');
  await page.locator('#key-dialog[open]').waitFor();
  const key = await page.locator('#key-value').inputValue();
  const env = await page.locator('#key-env').inputValue();
  expect(key.length >= 16, `a key is shown: ${JSON.stringify(key)}`);
  const proxyLine = env.split('\n').find((l) => l.startsWith('export HTTPS_PROXY='));
  expect(proxyLine && proxyLine.includes(`http://carol:${encodeURIComponent(key)}@`), `the HTTPS_PROXY line: ${env}`);
  expect(/^export https_proxy=http:\/\/carol:/m.test(env) && /^export http_proxy=http:\/\/carol:/m.test(env),
    `the lower-case lines: ${env}`);
  const proxyUrl = proxyLine.slice('export HTTPS_PROXY='.length);
  const envCheck = await ask({ do: 'proxy-url', url: proxyUrl });
  expect(envCheck.ok, `the proxy URL shown: ${JSON.stringify(envCheck)}`);
  await shot(page, 'dashboard-key.png');

  // The dialog keeps the focus inside (Tab cycles), and Escape closes it, back to "New agent".
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => !!document.activeElement.closest('#key-dialog')), 'Tab stays in the dialog');
  }
  await page.keyboard.press('Shift+Tab');
  expect(await page.evaluate(() => !!document.activeElement.closest('#key-dialog')), 'Shift+Tab stays in the dialog');
  await page.keyboard.press('Escape');
  await page.locator('#key-dialog[open]').waitFor({ state: 'detached' });
  await waitFor('the focus back on "New agent"', async () => (await page.evaluate(() => document.activeElement.id)) === 'new-agent', 2000);
  await waitFor('the key to leave the page once closed', async () => (await page.locator('#key-value').inputValue()) === '', 2000);

  // ---------------------------------------------------------------- 4. the key works
  log('4. the key pays through the proxy, and the payment shows on her card and in the ledger');
  await pay('carol', key, '/weather/carol', 'paid');
  const carol = card(page, 'carol');
  await carol.waitFor();
  await ledgerRows(page, 'carol').first().waitFor();
  await waitFor('carol\'s spend on her card', async () => /10 sats of 2,000 sats|10 sats of 2000 sats/.test(await carol.innerText()));
  await carol.locator('.badge', { hasText: 'API' }).waitFor();

  // ---------------------------------------------------------------- 5. pause
  log('5. pause carol (keyboard): the proxy declines her with agent-paused');
  const pause = page.getByRole('button', { name: 'Pause carol', exact: true });
  await pause.focus();
  await page.keyboard.press('Enter');
  await carol.locator('.badge.paused').waitFor();
  await page.getByRole('button', { name: 'Resume carol', exact: true }).waitFor();
  await pay('carol', key, '/news/carol', 'agent-paused');
  await page.locator('#declines-body tbody tr', { hasText: 'agent-paused' }).first().waitFor();

  // ---------------------------------------------------------------- 6. top up
  log('6. top carol up by 500 sats in the budget dialog');
  await page.getByRole('button', { name: 'Top up or recall carol', exact: true }).click();
  await page.locator('#budget-dialog[open]').waitFor();
  await page.locator('#budget-sats').fill('500');
  await page.locator('#budget-sats').press('Enter');
  await page.locator('#budget-dialog[open]').waitFor({ state: 'detached' });
  await waitFor('the new total on carol\'s card', async () => /of 2,500 sats|of 2500 sats/.test(await carol.innerText()));

  // ---------------------------------------------------------------- 6b. resume, rotate
  log('6b. resume carol, rotate her key: the old key stops working, the new one pays');
  await page.getByRole('button', { name: 'Resume carol', exact: true }).click();
  await carol.locator('.badge.active').waitFor();
  await page.getByRole('button', { name: 'Rotate the key of carol', exact: true }).click();
  await page.locator('#confirm-dialog[open]').waitFor();
  await page.locator('#confirm-ok').click();
  await page.locator('#key-dialog[open]').waitFor();
  await page.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
  const newKey = await page.locator('#key-value').inputValue();
  expect(newKey.length >= 16 && newKey !== key, 'a new key is shown');
  await page.getByRole('button', { name: 'Done', exact: true }).click();
  await page.locator('#key-dialog[open]').waitFor({ state: 'detached' });
  await pay('carol', key, '/old/carol', 'refused');
  await pay('carol', newKey, '/new/carol', 'paid');

  // The ledger's filters: carol's payments only.
  await page.locator('#flt-agent').selectOption('carol');
  await waitFor('the ledger filtered to carol', async () => {
    const rows = await page.locator('#ledger-body tbody tr').allInnerTexts();
    return rows.length === 2 && rows.every((r) => r.includes('carol'));
  });
  await page.locator('#flt-agent').selectOption('');
  await ledgerRows(page, 'alice').first().waitFor();

  // ---------------------------------------------------------------- 7. CSV
  log('7. the ledger as CSV, downloaded with the token');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download CSV' }).first().click(),
  ]);
  const csvPath = join(OUT, 'payments.csv');
  await download.saveAs(csvPath);
  const csv = readFileSync(csvPath, 'utf8');
  expect(csv.startsWith('payment_hash,agent,host,'), `CSV header: ${csv.slice(0, 80)}`);
  expect(csv.includes(',carol,') && csv.includes(',alice,'), 'CSV rows for carol and alice');

  // ---------------------------------------------------------------- 8. screenshots
  log('8. screenshots');
  await page.locator('#chart-hourly svg rect').first().waitFor();
  await page.evaluate(() => {
    window.scrollTo(0, 0);
    document.getElementById('toasts').replaceChildren();
  });
  await shot(page, 'dashboard.png', { fullPage: true });
  if (process.env.DOCS_SCREENSHOT) {
    // For the README: the top of the page, down to the end of the spend charts.
    const box = await page.locator('#charts').boundingBox();
    await page.screenshot({
      path: process.env.DOCS_SCREENSHOT,
      fullPage: true,
      clip: { x: 0, y: 0, width: 1280, height: Math.ceil(box.y + box.height + 16) },
    });
    console.log('SHOT', process.env.DOCS_SCREENSHOT);
  }
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot(page, 'dashboard-dark.png');
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 1, `on a phone the page scrolls sideways by ${overflow}px`);
  await shot(page, 'dashboard-phone.png', { fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // ---------------------------------------------------------------- 9. delete
  log('9. delete carol after confirming; her key stops working');
  await page.getByRole('button', { name: 'Delete carol', exact: true }).click();
  await page.locator('#confirm-dialog[open]').waitFor();
  // Escape cancels: carol stays.
  await page.keyboard.press('Escape');
  await page.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
  await page.waitForTimeout(300);
  expect(await carol.count() === 1, 'Escape cancelled the deletion');
  await page.getByRole('button', { name: 'Delete carol', exact: true }).click();
  await page.locator('#confirm-dialog[open]').waitFor();
  await page.locator('#confirm-ok').click();
  await carol.waitFor({ state: 'detached' });
  await pay('carol', newKey, '/weather/gone', 'refused');

  // ---------------------------------------------------------------- 10. a 401 asks again
  log('10. a token that stops working brings the prompt back');
  await page.evaluate(() => sessionStorage.setItem('l402-proxy-admin-token', 'revoked'));
  await page.locator('#login-dialog[open]').waitFor();
  await page.locator('#login-error', { hasText: 'refused' }).waitFor();
  await page.locator('#login-token').fill(TOKEN);
  await page.locator('#login-token').press('Enter');
  await page.locator('#login-dialog[open]').waitFor({ state: 'detached' });
  await card(page, 'alice').waitFor();

  // Polling stops while the tab is hidden (checked from the requests it makes).
  log('11. no polling while the tab is hidden');
  let polls = 0;
  const count = (r) => { if (r.url().includes('/v1/agents')) polls++; };
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await page.waitForTimeout(500);
  context.on('request', count);
  await page.waitForTimeout(4500);
  expect(polls === 0, `${polls} polls while hidden`);
  await page.locator('#live', { hasText: 'hidden' }).waitFor();
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => false });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await waitFor('polling to resume', async () => polls > 0, 5000);
  context.off('request', count);

}

// ------------------------------------------------------------------ scenario "approvals"
// Alice (config file) asks approval above 5 sats; the seller asks 10. The test's approval
// timeout is 30 s.
const parseLeft = (t) => {
  const m = /(\d+):(\d\d) left/.exec(t);
  return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
};

async function approvals() {
  log('A1. a held payment shows at the top: agent, host, service, amount, time left');
  const page = watch(context.pages()[0] || (await context.newPage()), 'tab');
  await page.goto(`${ADMIN}/#token=${encodeURIComponent(TOKEN)}`);
  const alice = card(page, 'alice');
  await alice.waitFor();
  await alice.locator('.guards .chip', { hasText: 'approval above 5 sats' }).waitFor();
  await alice.locator('.guards .chip', { hasText: '120 requests/min' }).waitFor();
  await page.locator('#approvals-body', { hasText: 'No payment waits for approval' }).waitFor();
  expect(await page.locator('#approvals-banner').isHidden(), 'no banner while nothing waits');

  await ask({ do: 'hold', name: 'first', agent: 'alice', key: 'alice-key', path: '/weather/held-1' });
  const item1 = page.locator('#approvals-body article.approval[data-agent="alice"]');
  await item1.waitFor();
  await page.locator('#approvals-banner', { hasText: '1 payment waits for your approval' }).waitFor();
  expect((await page.title()).startsWith('(1) '), `the tab's title counts it: ${await page.title()}`);
  const text1 = await item1.innerText();
  for (const want of ['alice', SELLER, 'weather', '10 sats']) expect(text1.includes(want), `the approval shows ${want}: ${text1}`);
  const left1 = parseLeft(await item1.locator('.time-left').innerText());
  expect(left1 > 0 && left1 <= 30, `time left ${left1} s of a 30 s timeout`);
  await waitFor('the time left to count down', async () => parseLeft(await item1.locator('.time-left').innerText()) < left1, 3000);
  const still1 = await ask({ do: 'waiting', name: 'first' });
  expect(still1.ok, 'the agent\'s request waits while the approval is shown');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'dashboard-approval.png');
  // On a phone it fits too.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 1, `on a phone the page scrolls sideways by ${overflow}px`);
  await shot(page, 'dashboard-approval-phone.png');
  await page.setViewportSize({ width: 1280, height: 900 });

  log('A2. approve it with the keyboard: it leaves the page and the agent\'s request completes, paid');
  await page.locator('#approvals-review').click();
  await waitFor('the focus on the approvals panel', async () => (await page.evaluate(() => document.activeElement.id)) === 'approvals', 2000);
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.getAttribute('aria-label')) === `Approve 10 sats to ${SELLER} for alice`,
    'Tab from the panel reaches its Approve button');
  await page.keyboard.press('Enter');
  await item1.waitFor({ state: 'detached' });
  await page.locator('#approvals-banner').waitFor({ state: 'hidden' });
  await page.locator('.toast', { hasText: `Approved: 10 sats to ${SELLER} for alice` }).waitFor();
  expect(await page.evaluate(() => document.activeElement.id) === 'approvals', 'the focus stays in the panel');
  await heldOutcome('first', 'paid');
  await ledgerRows(page, 'alice').filter({ hasText: SELLER }).first().waitFor();

  log('A3. create dave with guardrails in the form; a rate of 0 is refused before it is sent');
  await page.getByRole('button', { name: 'New agent', exact: true }).click();
  await page.locator('#agent-dialog[open]').waitFor();
  const form = (n) => page.locator(`#agent-form input[name="${n}"]`);
  await form('name').fill('dave');
  await form('approve_above_sats').fill('5');
  await form('payments_per_minute').fill('0');
  await form('payments_per_minute').press('Enter');
  await page.locator('#agent-error', { hasText: 'Payments per minute' }).waitFor();
  expect(await page.evaluate(() => document.activeElement.name) === 'payments_per_minute', 'the wrong field has the focus');
  await form('payments_per_minute').fill('10');
  await form('requests_per_minute').fill('30');
  await form('max_price_increase_pct').fill('50');
  await form('max_price_increase_pct').press('Enter');
  await page.locator('#key-dialog[open]').waitFor();
  const key = await page.locator('#key-value').inputValue();
  const env = await page.locator('#key-env').inputValue();
  const proxyLine = env.split('\n').find((l) => l.startsWith('export HTTPS_PROXY='));
  const envCheck = await ask({ do: 'proxy-url', url: proxyLine.slice('export HTTPS_PROXY='.length) });
  expect(envCheck.ok, `the proxy URL shown: ${JSON.stringify(envCheck)}`);
  await page.keyboard.press('Escape');
  await page.locator('#key-dialog[open]').waitFor({ state: 'detached' });
  const dave = card(page, 'dave');
  for (const chip of ['approval above 5 sats', '≤ 10 payments/min', '≤ 30 requests/min', 'price rise ≤ 50 %']) {
    await dave.locator('.guards .chip', { hasText: chip }).waitFor();
  }

  log('A4. dave\'s payment waits; Deny asks first (Escape keeps it), then the agent gets approval-denied');
  await ask({ do: 'hold', name: 'second', agent: 'dave', key, path: '/news/held-2' });
  const item2 = page.locator('#approvals-body article.approval[data-agent="dave"]');
  await item2.waitFor();
  const deny = page.getByRole('button', { name: `Deny 10 sats to ${SELLER} for dave`, exact: true });
  await deny.focus();
  await page.keyboard.press('Enter');
  await page.locator('#confirm-dialog[open]').waitFor();
  expect((await page.locator('#confirm-text').innerText()).includes('approval-denied'), 'the confirmation says what the agent gets');
  await page.keyboard.press('Escape');
  await page.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
  await waitFor('the focus back on Deny', async () => (await page.evaluate(() => document.activeElement.getAttribute('data-action'))) === 'deny', 2000);
  expect(await item2.count() === 1, 'Escape kept the approval');
  const still2 = await ask({ do: 'waiting', name: 'second' });
  expect(still2.ok, 'dave\'s request still waits');
  await page.keyboard.press('Enter');
  await page.locator('#confirm-dialog[open]').waitFor();
  await page.locator('#confirm-ok').click();
  await confirmClosed(page);
  await item2.waitFor({ state: 'detached' });
  await page.locator('.toast', { hasText: `Denied: 10 sats to ${SELLER} for dave` }).waitFor();
  await heldOutcome('second', 'approval-denied');
  await page.locator('#declines-body tbody tr', { hasText: 'approval-denied' }).filter({ hasText: 'dave' }).first().waitFor();

  log('A5. one decided elsewhere while the page still shows it: its 409 is shown and it goes');
  await ask({ do: 'hold', name: 'third', agent: 'alice', key: 'alice-key', path: '/stocks/held-3' });
  const item3 = page.locator('#approvals-body article.approval[data-agent="alice"]');
  await item3.waitFor();
  const id = await item3.getAttribute('data-approval');
  // The page's list stays as it was (as an answer already in flight would be).
  let frozen = null;
  let served = 0;
  const isList = (url) => url.pathname === '/v1/approvals';
  const freeze = async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    if (frozen === null) frozen = await (await route.fetch()).text();
    served++;
    return route.fulfill({ status: 200, contentType: 'application/json', body: frozen });
  };
  await page.route(isList, freeze);
  await waitFor('a frozen list with the approval', async () => served > 0 && frozen.includes(id), 5000);
  const elsewhere = await ask({ do: 'decide', id, approve: true });
  expect(elsewhere.ok, `approved through the API: ${JSON.stringify(elsewhere)}`);
  await page.getByRole('button', { name: `Deny 10 sats to ${SELLER} for alice`, exact: true }).click();
  await page.locator('#confirm-dialog[open]').waitFor();
  await page.locator('#confirm-ok').click();
  await page.locator('.toast.bad', { hasText: 'the approval is already approved' }).waitFor();
  await page.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
  await item3.waitFor({ state: 'detached' });
  const servedThen = served;
  await waitFor('two more polls of the frozen list', async () => served >= servedThen + 2, 8000);
  expect(await item3.count() === 0, 'a stale list does not bring a decided approval back');
  await page.unroute(isList, freeze);
  await heldOutcome('third', 'paid');
  await page.locator('#approvals-body', { hasText: 'No payment waits for approval' }).waitFor();
}

// ------------------------------------------------------------------ scenario "policy"
// The test configured a policy_hook on 127.0.0.1 that allowed one payment and denied one
// before the browser opened, and allows from now on.
async function policy() {
  log('P1. the overview shows the policy service: its host, fail-closed, its decisions');
  const page = watch(context.pages()[0] || (await context.newPage()), 'tab 1');
  await page.goto(`${ADMIN}/#token=${encodeURIComponent(TOKEN)}`);
  await card(page, 'alice').waitFor();
  const fact = page.locator('#f-policy');
  await fact.locator('code', { hasText: '127.0.0.1' }).waitFor();
  await fact.locator('.badge', { hasText: 'fail-closed' }).waitFor();
  await fact.getByText('1 allowed · 1 denied · 0 held · 0 failed').waitFor();
  const badgeTitle = await fact.locator('.badge').getAttribute('title');
  expect(badgeTitle.includes('policy-unavailable'), `the badge explains failure: ${badgeTitle}`);

  log('P2. the denial is among the declines, its code explained on hover');
  const row = page.locator('#declines-body tbody tr', { hasText: 'policy-denied' }).first();
  await row.waitFor();
  const title = await row.locator('code.code.guard').getAttribute('title');
  expect(title && title.includes('policy service'), `the code's explanation: ${title}`);
  expect((await row.innerText()).includes('not on the list'), 'the reason is shown');

  log('P3. a payment allowed now is counted without a reload');
  await pay('alice', 'alice-key', '/news/policy-live', 'paid');
  await fact.getByText('2 allowed · 1 denied · 0 held · 0 failed').waitFor();
  await shot(page, 'policy.png');
}

// ------------------------------------------------------------------ scenario "fleet"
// The kill switch and a tripped spend-spike breaker: alice's breaker is at 20 sats (two
// payments of 10, no fee), bob has none.
async function fleet() {
  log('F1. "Pause all payments" asks first, then every paid request is declined fleet-paused');
  const page = watch(context.pages()[0] || (await context.newPage()), 'tab 1');
  await page.goto(`${ADMIN}/#token=${encodeURIComponent(TOKEN)}`);
  await card(page, 'alice').waitFor();
  await page.locator('#f-fleet .badge', { hasText: 'paying' }).waitFor();
  await page.locator('#pause-all').click();
  await page.locator('#confirm-dialog[open]').waitFor();
  expect((await page.locator('#confirm-text').innerText()).includes('fleet-paused'), 'the confirmation says what agents get');
  await page.locator('#confirm-ok').click();
  await confirmClosed(page);
  await page.locator('#fleet-banner').waitFor({ state: 'visible' });
  expect((await page.locator('#fleet-banner-text').innerText()).includes('paused by the operator'), 'the banner says who paused');
  await page.locator('#f-fleet .badge', { hasText: 'paused' }).waitFor();
  expect(await page.locator('#pause-all').isHidden(), 'no second pause button while paused');
  await pay('bob', 'bob-key', '/fleet/x', 'fleet-paused');
  await pay('bob', 'bob-key', '/free/x', 'free');
  await shot(page, 'fleet-paused.png');

  log('F2. "Resume payments" lifts it: the fleet pays again');
  await page.locator('#resume-all').click();
  await page.locator('#fleet-banner').waitFor({ state: 'hidden' });
  await page.locator('.toast', { hasText: 'Payments resumed for the fleet.' }).waitFor();
  await page.locator('#f-fleet .badge', { hasText: 'paying' }).waitFor();
  await pay('bob', 'bob-key', '/fleet/x', 'paid');

  log('F3. alice trips her breaker: her card says so, and Resume lifts it');
  await pay('alice', 'alice-key', '/b1/x', 'paid');
  await pay('alice', 'alice-key', '/b2/x', 'paid');
  await pay('alice', 'alice-key', '/b3/x', 'spend-spike');
  const alice = card(page, 'alice');
  await alice.locator('.badge.stopped', { hasText: 'stopped: spend-spike' }).waitFor();
  await alice.locator('.guards .chip', { hasText: 'breaker at 20 sats' }).waitFor();
  await shot(page, 'fleet-breaker.png');
  const resume = page.getByRole('button', { name: 'Resume alice', exact: true });
  expect(!(await resume.isDisabled()), 'a config agent\'s breaker is lifted from the page');
  await resume.click();
  await page.locator('.toast', { hasText: 'alice is resumed' }).waitFor();
  await alice.locator('.badge.stopped').waitFor({ state: 'detached' });
  await pay('alice', 'alice-key', '/b3/x', 'paid');

  log('F4. bob\'s cap per seller shows what he spent there and what is left');
  const bob = card(page, 'bob');
  const capRow = bob.locator('.bar-row.seller[data-seller="127.0.0.1"]');
  await capRow.waitFor();
  await waitFor('bob\'s spend at 127.0.0.1', async () => (await capRow.innerText()).includes('10 sats of 100 sats'), 10000);
  expect((await capRow.innerText()).includes('Today at 127.0.0.1'), `the cap's row: ${await capRow.innerText()}`);
  await shot(page, 'fleet-seller-cap.png');
}

/** Waits for the confirmation dialog to close; if it stays open, fails with what it shows. */
async function confirmClosed(page) {
  try {
    await page.locator('#confirm-dialog[open]').waitFor({ state: 'detached' });
  } catch (e) {
    const shown = await page.locator('#confirm-error').innerText().catch(() => '(unreadable)');
    throw new Error(`the confirmation dialog stayed open, showing: ${JSON.stringify(shown)} (${e.message})`);
  }
}

async function heldOutcome(name, expectOutcome) {
  const r = await ask({ do: 'outcome', name, expect: expectOutcome });
  expect(r.ok, `the held request ${name}: wanted ${expectOutcome}, got ${JSON.stringify(r)}`);
  return r;
}

try {
  if (SCENARIO === 'manage') await manage();
  else if (SCENARIO === 'approvals') await approvals();
  else if (SCENARIO === 'policy') await policy();
  else if (SCENARIO === 'fleet') await fleet();
  else fail(`unknown SCENARIO ${SCENARIO}`);

  expect(strays.length === 0, `requests left the admin origin: ${strays.join(', ')}`);
  expect(problems.length === 0, `the page reported problems:\n${problems.join('\n')}`);
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  console.log('DONE');
  process.exit(0);
} catch (e) {
  console.error(`dashboard: ${e.stack || e}`);
  for (const p of context.pages()) {
    try { await shot(p, `failure-${context.pages().indexOf(p)}.png`, { fullPage: true }); } catch (_) { /* closed */ }
  }
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
