// Drives the example server's chat page (examples/server/chat.html, GET /chat) in headless
// Chromium: messages travel between pages over server-sent events, then over forced long-polling.
//
//   node tests/browser/chat.mjs <path-to-plinth-example> <screenshot.png>
//
// Prints one "ok N - ..." line per passed check and closes on "chat: N passed, M failed"; on a
// failure it prints what failed and the server's output, and exits 1. Environment: CHROMIUM
// overrides the browser (default /usr/bin/chromium). Every wait has a timeout; the whole run is
// cut at 55 s.
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [binary, screenshotPath] = process.argv.slice(2);
if (!binary || !screenshotPath) {
  console.error('usage: node tests/browser/chat.mjs <path-to-plinth-example> <screenshot.png>');
  process.exit(2);
}

const started = Date.now();
const seconds = (since) => `${((Date.now() - since) / 1000).toFixed(2)} s`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const unique = (label) => `${label} ${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

let passed = 0;
let failing = false;
let server = null;
let serverExit = null; // resolves to { code, signal }
let serverOutput = { stdout: '', stderr: '' };
let browser = null;
const pageErrors = [];
const consoleErrors = [];

// Rejects with "<what>: timed out after <ms> ms" unless the promise settles first.
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Runs one check: prints "ok" when it returns, or tags the error with the check's name.
async function check(what, body) {
  const since = Date.now();
  try {
    const result = await body();
    if (pageErrors.length) throw new Error(`uncaught error in a page: ${pageErrors.join('; ')}`);
    passed++;
    console.log(`ok ${passed} - ${what} (${seconds(since)})`);
    return result;
  } catch (error) {
    error.check ??= what;
    throw error;
  }
}

async function fail(error) {
  if (failing) return;
  failing = true;
  console.log(`not ok ${passed + 1} - ${error.check ?? 'the run'}: ${error.message}`);
  if (consoleErrors.length) console.log(`browser console errors:\n  ${consoleErrors.join('\n  ')}`);
  if (server) {
    const state = server.exitCode !== null || server.signalCode !== null
      ? `exited (code ${server.exitCode}, signal ${server.signalCode})` : 'still running: killing it';
    console.log(`server ${state}`);
    console.log(`server stdout (last 4000 chars):\n${serverOutput.stdout.slice(-4000)}`);
    console.log(`server stderr (last 4000 chars):\n${serverOutput.stderr.slice(-4000)}`);
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  }
  await within(5000, 'closing the browser', browser?.close() ?? Promise.resolve()).catch(() => {});
  console.log(`chat: ${passed} passed, 1 failed in ${seconds(started)}`);
  process.exit(1);
}

const watchdog = setTimeout(() => fail(new Error('the whole run took more than 55 s')), 55_000);

// Starts the server on a free port and returns its base URL.
async function startServer() {
  const args = ['--address', '127.0.0.1', '--port', '0', '--threads', '2', '--sse-heartbeat-ms', '1000'];
  server = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  serverExit = new Promise((resolve) => server.on('exit', (code, signal) => resolve({ code, signal })));
  server.stderr.setEncoding('utf8').on('data', (chunk) => { serverOutput.stderr += chunk; });
  const port = await within(10_000, 'waiting for "plinth-example listening on http://127.0.0.1:PORT"', new Promise((resolve, reject) => {
    createInterface({ input: server.stdout }).on('line', (line) => {
      serverOutput.stdout += `${line}\n`;
      const match = /listening on http:\/\/\S+:(\d+) /.exec(line);
      if (match) resolve(Number(match[1]));
    });
    server.on('error', (error) => reject(new Error(`cannot start ${binary}: ${error.message}`)));
    serverExit.then(({ code, signal }) => reject(new Error(`the server exited (code ${code}, signal ${signal}) before listening`)));
  }));
  return `http://127.0.0.1:${port}`;
}

// Opens the chat in a context of its own (its own connections, like another user's browser).
async function openChat(base, name, query = '') {
  const context = await browser.newContext({ viewport: { width: 720, height: 540 } });
  context.setDefaultTimeout(5000);
  context.setDefaultNavigationTimeout(10_000);
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(`${name}: ${message.text()}`);
  });
  await page.goto(`${base}/chat${query}`, { timeout: 10_000 });
  page.label = name;
  return page;
}

const listOf = (page) => page.$$eval('#messages li', (items) => items.map((li) => `#${li.dataset.id} ${li.textContent}`));

async function waitTransport(page, expected) {
  try {
    await page.waitForFunction((value) => document.getElementById('transport')?.textContent === value,
      expected, { timeout: 5000 });
  } catch {
    const shown = await page.textContent('#transport', { timeout: 1000 }).catch(() => '(unreadable)');
    throw new Error(`${page.label}: #transport is "${shown}" after 5 s, expected "${expected}"`);
  }
}

// Waits for an <li> whose text is exactly `text` (so HTML in it was not parsed) and returns its id.
async function waitMessage(page, text, timeout = 5000) {
  try {
    const handle = await page.waitForFunction((wanted) => {
      const li = [...document.querySelectorAll('#messages li')].find((item) => item.textContent === wanted);
      return li ? li.dataset.id : null;
    }, text, { timeout });
    return Number(await handle.jsonValue());
  } catch {
    const items = await listOf(page).catch(() => ['(unreadable)']);
    throw new Error(`${page.label}: no message ${JSON.stringify(text)} after ${timeout} ms; the list has: ${JSON.stringify(items)}`);
  }
}

async function sendFromPage(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
  try {
    await page.waitForFunction(() => document.getElementById('text').value === '', null, { timeout: 5000 });
  } catch {
    const error = await page.textContent('#error', { timeout: 1000 }).catch(() => '');
    throw new Error(`${page.label}: the input was not cleared after sending (page says: "${error}")`);
  }
}

async function sendFromNode(base, text) {
  const response = await fetch(`${base}/chat/send`, {
    method: 'POST', headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: text,
    signal: AbortSignal.timeout(5000),
  });
  const body = await response.text();
  if (response.status !== 201) throw new Error(`POST /chat/send answered ${response.status}: ${body}`);
  const { id } = JSON.parse(body);
  if (!Number.isSafeInteger(id)) throw new Error(`POST /chat/send answered ${body}, expected {"id":N}`);
  return id;
}

// Every page lists each message once, in increasing id order.
async function checkOrder(page) {
  const ids = await page.$$eval('#messages li', (items) => items.map((li) => Number(li.dataset.id)));
  if (!ids.every((id, i) => i === 0 || id > ids[i - 1])) throw new Error(`${page.label}: ids out of order or repeated: ${ids}`);
}

async function main() {
  const base = await check('the server starts and prints its port', startServer);
  browser = await check('chromium starts', () => chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
    timeout: 15_000,
  }));

  // 1. Server-sent events.
  const [sseA, sseB] = await check('two pages open /chat', () => Promise.all([
    openChat(base, 'SSE page A'), openChat(base, 'SSE page B')]));
  await check('both pages show transport "sse"', () => Promise.all([waitTransport(sseA, 'sse'), waitTransport(sseB, 'sse')]));
  const sseText = unique('hello over SSE <b>not bold</b> & "quotes" é ✓');
  await check('SSE: page A sends a message', () => sendFromPage(sseA, sseText));
  await check('SSE: page B shows it within 5 s', () => waitMessage(sseB, sseText));
  await check('SSE: page A gets its own message back', () => waitMessage(sseA, sseText));
  await check('SSE: a tick event reaches the page', () => sseB.waitForFunction(
    () => document.getElementById('tick')?.textContent !== 'none yet', null, { timeout: 5000 }));

  // 2. Long-polling, forced.
  const [pollA, pollB] = await check('two pages open /chat?transport=poll', () => Promise.all([
    openChat(base, 'poll page A', '?transport=poll'), openChat(base, 'poll page B', '?transport=poll')]));
  await check('both pages show transport "poll"', () => Promise.all([waitTransport(pollA, 'poll'), waitTransport(pollB, 'poll')]));
  await check('poll: both pages show the earlier SSE message (history)', () => Promise.all([
    waitMessage(pollA, sseText), waitMessage(pollB, sseText)]));
  const pollText = unique('hello over long-polling');
  await check('poll: page B sends a message', () => sendFromPage(pollB, pollText));
  await check('poll: page A shows it within 5 s', () => waitMessage(pollA, pollText));
  const thirdText = unique('from a plain fetch:\n  line two \\ </li><script>x</script>');
  const thirdId = await check('a plain POST /chat/send answers 201 {"id":N}', () => sendFromNode(base, thirdText));
  await check('poll: the fetched message shows on both pages with its id', async () => {
    const ids = await Promise.all([waitMessage(pollA, thirdText), waitMessage(pollB, thirdText)]);
    if (ids.some((id) => id !== thirdId)) throw new Error(`shown with data-id ${ids}, POST answered ${thirdId}`);
  });
  await check('SSE pages got the poll-side messages too', () => Promise.all([
    waitMessage(sseA, pollText), waitMessage(sseB, thirdText)]));

  // 3. A page that connects late gets the history replayed on its event stream.
  const late = await check('a late SSE page opens', () => openChat(base, 'late SSE page'));
  await check('the late page replays all three messages', async () => {
    await waitTransport(late, 'sse');
    for (const text of [sseText, pollText, thirdText]) await waitMessage(late, text);
  });
  await check('every page lists messages once, in id order', () =>
    Promise.all([sseA, sseB, pollA, pollB, late].map(checkOrder)));

  await check(`full-page screenshot saved to ${screenshotPath}`, async () => {
    await pollA.screenshot({ path: screenshotPath, fullPage: true, timeout: 10_000 });
    if (statSync(screenshotPath).size === 0) throw new Error('the screenshot is empty');
  });

  // The pages stay open: the server must stop with event streams and polls still attached.
  await check('SIGTERM stops the server with exit code 0 within 10 s', async () => {
    server.kill('SIGTERM');
    const { code, signal } = await within(10_000, 'waiting for the server to exit', serverExit);
    if (code !== 0) throw new Error(`the server exited with code ${code}, signal ${signal}`);
  });
  await check('the browser closes', () => within(10_000, 'closing the browser', browser.close()));
}

main().then(() => {
  clearTimeout(watchdog);
  console.log(`chat: ${passed} passed, 0 failed in ${seconds(started)}`);
  process.exit(0);
}, fail);
