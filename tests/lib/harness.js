'use strict';
/*
 * harness.js - shared machinery for respcache's integration tests.
 *
 *   startUpstream(opts)  a stateful fake of the OpenAI Responses API
 *   startProxy(opts)     spawns the real daemon and waits until it listens
 *   withStack(opts, fn)  both of the above, always stopped afterwards
 *   withProxy(up, o, fn) a proxy in front of a test's own upstream, likewise
 *   holdGets(up)         hold the mock's GETs until the test answers them
 *   request(url, opts)   one HTTP request (keep-alive agent, bounded time)
 *   openSSE(url, opts)   an SSE request read event by event
 *   rawRequest(port, s)  bytes over a plain socket (for paths a client would
 *                        normalise, and for Upgrade requests)
 *   parseAnswers(buf)    every complete HTTP answer in what a raw socket read
 *   exchange(port, b)    raw bytes in, every answer out, and whether it closed
 *   metric(px, name, l)  one series of the daemon's /metrics; inState()
 *   tmpdir(), freePort(), assertOpenAIError(), until(), pipesRead()
 *
 * Nothing here sleeps to wait for readiness: the proxy is ready when it says
 * so on stderr, the mock when its listen() callback ran.  The daemon's
 * "listening on" line is the one log line the harness waits for: with port
 * 0 it is the only place the port is told, so there is nothing to poll
 * before it.  After that, tests wait on a state (an answer, /readyz, a
 * file) or a metric, not on a log line; only a test of what the logs say
 * waits for the lines it checks (the access log has a writer thread of its
 * own, so a line comes a little after its answer).
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const zlib = require('node:zlib');

/* ------------------------------------------------------------------ */
/* Last-resort cleanup                                                 */
/* ------------------------------------------------------------------ */

const liveProcs = new Set();
const tmpDirs = [];

process.on('exit', () => {
	for (const p of liveProcs) {
		try { p.kill('SIGKILL'); } catch { /* already gone */ }
	}
	if (!process.env.RESPCACHE_KEEP_TMP) {
		for (const d of tmpDirs) {
			try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
		}
	}
});

function tmpdir(prefix = 'respcache-it-') {
	const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
	tmpDirs.push(d);
	return d;
}

/* A TCP port on 127.0.0.1 with nothing listening (bound, then released). */
function freePort() {
	return new Promise((resolve, reject) => {
		const s = net.createServer();
		s.on('error', reject);
		s.listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => resolve(port));
		});
	});
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/* Poll cond() every stepMs until it is truthy; bounded by timeoutMs. */
async function until(cond, { timeoutMs = 5000, stepMs = 20, what = 'condition' } = {}) {
	const end = Date.now() + timeoutMs;
	for (;;) {
		const v = await cond();
		if (v) return v;
		if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
		await delay(stepMs);
	}
}

/*
 * Resolve after the event loop's current poll phase.  By then what a daemon
 * wrote to its stderr before sending an answer this process has just read
 * has been read too: its pipe was readable before the answer's socket, and
 * libuv polls level-triggered, so both came in the same poll at the latest.
 */
function pipesRead() {
	return new Promise((resolve) => setImmediate(resolve));
}

/* Reject p if it has not settled within ms. */
function within(p, ms, what) {
	let t;
	return Promise.race([
		p,
		new Promise((_, reject) => {
			t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
		}),
	]).finally(() => clearTimeout(t));
}

/* ------------------------------------------------------------------ */
/* The mock upstream                                                   */
/* ------------------------------------------------------------------ */

const LOREM = 'The quick brown fox jumps over the lazy dog while the cache keeps every finished answer close at hand. ';
const TEXT_SIZE = 2400;		/* output text length: a Response body is ~3 KB */

function randHex(n) {
	return crypto.randomBytes(n).toString('hex');
}

function now() {
	return Math.floor(Date.now() / 1000);
}

/* Query parsing the way the SDKs send it: include[]=, include%5B%5D=, include= */
function parseQuery(url) {
	const q = new URL(url, 'http://x').searchParams;
	const include = [...new Set([...q.getAll('include[]'), ...q.getAll('include')])].sort();
	return { q, include };
}

function errorBody(message, type = 'invalid_request_error', code = null, param = null) {
	return { error: { message, type, param, code } };
}

function toInputItems(input, nextId) {
	const mk = (role, content) => ({
		id: nextId(),
		type: 'message',
		role,
		status: 'completed',
		content: typeof content === 'string' ? [{ type: 'input_text', text: content }] : content,
	});
	if (input == null) return [];
	if (typeof input === 'string') return [mk('user', input)];
	if (Array.isArray(input)) {
		return input.map((it) => {
			if (typeof it === 'string') return mk('user', it);
			if (it && typeof it === 'object') {
				if ('content' in it) return mk(it.role || 'user', it.content);
				return { id: nextId(), ...it };
			}
			return mk('user', String(it));
		});
	}
	return [mk('user', JSON.stringify(input))];
}

class Upstream {
	constructor(opts = {}) {
		this.opts = opts;
		this.requests = [];
		this.store = new Map();		/* id -> record */
		this.reqN = 0;
		this.msgN = 0;
		this.faults = [];
		this.hang = false;
		this.gzip = false;
		this.requireKey = null;
		this.streamDelayMs = 0;
		this.holdStream = null;
		/* override(req, res, body): a test's own handler; true if it answered */
		this.override = null;
		this.hung = new Set();
		this.server = null;
		this.url = null;
		this.port = null;
	}

	/* -- helpers for tests -- */

	count(method, p) {
		return this.requests.filter((r) =>
			(method == null || r.method === method) &&
			(p == null || (p instanceof RegExp ? p.test(r.path) : r.path === p))).length;
	}

	failNext(status, bodyObj, headers = {}) {
		this.faults.push({ status, body: bodyObj, headers });
	}

	/*
	 * Create a response directly in the fake (no HTTP request): for tests
	 * that need a response the proxy has never seen.
	 */
	seed({ model = 'gpt-4o', input = 'hello', background = false, store = true, stream = false } = {}) {
		return this.createRecord({ model, input, background, store, stream }).id;
	}

	finish(id, status = 'completed') {
		const rec = this.store.get(id);
		if (!rec) throw new Error(`finish: unknown id ${id}`);
		rec.status = status;
		rec.completedAt = status === 'completed' ? now() : null;
	}

	get(id) {
		return this.store.get(id);
	}

	/* -- the model -- */

	createRecord({ model, input, background, store, stream }) {
		const id = `resp_${randHex(16)}`;
		const seed = `Answer for ${id}: `;
		let text = seed;
		while (text.length < TEXT_SIZE) text += LOREM;
		text = text.slice(0, TEXT_SIZE);
		const rec = {
			id,
			model: model || 'gpt-4o',
			createdAt: now(),
			completedAt: background ? null : now(),
			status: background ? 'queued' : 'completed',
			background: !!background,
			store: store !== false,
			stream: !!stream,
			text,
			msgId: `msg_${randHex(12)}`,
			inputItems: toInputItems(input, () => `msg_${++this.msgN}`),
			events: null,
			deleted: false,
		};
		if (rec.store) this.store.set(id, rec);
		return rec;
	}

	responseObject(rec, include = []) {
		const done = rec.status === 'completed';
		const words = rec.text.split(' ').length;
		const metadata = {};
		if (include.length) metadata.include = include.join(',');
		return {
			id: rec.id,
			object: 'response',
			created_at: rec.createdAt,
			status: rec.status,
			background: rec.background,
			completed_at: done ? rec.completedAt : null,
			error: null,
			incomplete_details: null,
			instructions: null,
			max_output_tokens: null,
			model: rec.model,
			output: done ? [{
				type: 'message',
				id: rec.msgId,
				status: 'completed',
				role: 'assistant',
				content: [{ type: 'output_text', text: rec.text, annotations: [] }],
			}] : [],
			parallel_tool_calls: true,
			previous_response_id: null,
			reasoning: { effort: null, summary: null },
			store: rec.store,
			temperature: 1.0,
			text: { format: { type: 'text' } },
			tool_choice: 'auto',
			tools: [],
			top_p: 1.0,
			truncation: 'disabled',
			usage: done ? {
				input_tokens: 12,
				input_tokens_details: { cached_tokens: 0 },
				output_tokens: words,
				output_tokens_details: { reasoning_tokens: 0 },
				total_tokens: 12 + words,
			} : null,
			user: null,
			metadata,
		};
	}

	/* The events of a streamed response (sequence numbers from 0). */
	buildEvents(rec) {
		const ev = [];
		const push = (type, fields) => ev.push({ type, sequence_number: ev.length, ...fields });
		const inProgress = { ...this.responseObject({ ...rec, status: 'in_progress' }) };
		push('response.created', { response: inProgress });
		push('response.in_progress', { response: inProgress });
		push('response.output_item.added', {
			output_index: 0,
			item: { id: rec.msgId, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
		});
		push('response.content_part.added', {
			item_id: rec.msgId, output_index: 0, content_index: 0,
			part: { type: 'output_text', text: '', annotations: [] },
		});
		const n = 5;
		const step = Math.ceil(rec.text.length / n);
		for (let i = 0; i < rec.text.length; i += step) {
			push('response.output_text.delta', {
				item_id: rec.msgId, output_index: 0, content_index: 0,
				delta: rec.text.slice(i, i + step), logprobs: [], obfuscation: randHex(4),
			});
		}
		push('response.output_text.done', {
			item_id: rec.msgId, output_index: 0, content_index: 0, text: rec.text, logprobs: [],
		});
		const final = this.responseObject({ ...rec, status: 'completed' });
		push('response.content_part.done', {
			item_id: rec.msgId, output_index: 0, content_index: 0, part: final.output[0].content[0],
		});
		push('response.output_item.done', { output_index: 0, item: final.output[0] });
		push('response.completed', { response: final });
		return ev;
	}

	/* -- HTTP -- */

	headers(extra = {}) {
		return {
			'x-request-id': `req_${this.reqN}`,
			'openai-version': '2020-10-01',
			'openai-processing-ms': String(10 + (this.reqN % 50)),
			...extra,
		};
	}

	sendJSON(res, status, obj, extra = {}) {
		let body = Buffer.from(JSON.stringify(obj));
		const h = { 'content-type': 'application/json', ...this.headers(extra) };
		if (this.gzip) {
			body = zlib.gzipSync(body);
			h['content-encoding'] = 'gzip';
		}
		h['content-length'] = String(body.length);
		res.writeHead(status, h);
		res.end(body);
	}

	sendError(res, status, message, type, code, extra) {
		this.sendJSON(res, status, errorBody(message, type, code), extra);
	}

	notFound(res, id) {
		this.sendError(res, 404, `Response with id '${id}' not found.`, 'invalid_request_error', null);
	}

	async sendSSE(res, events, { hold = null } = {}) {
		res.writeHead(200, {
			'content-type': 'text/event-stream; charset=utf-8',
			'cache-control': 'no-cache',
			...this.headers(),
		});
		let closed = false;
		res.on('close', () => { closed = true; });
		for (let i = 0; i < events.length; i++) {
			if (closed) return;
			const e = events[i];
			res.write(`event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
			if (i === 0 && hold) await hold;
			if (this.streamDelayMs > 0 && i < events.length - 1) await delay(this.streamDelayMs);
		}
		if (!closed) res.end();
	}

	async handle(req, res, body) {
		this.reqN++;
		const url = req.url;
		const p = url.split('?')[0];
		this.requests.push({ method: req.method, path: p, url, headers: { ...req.headers }, body });

		if (this.override && this.override(req, res, body)) return;
		if (this.hang) {
			this.hung.add(res);
			res.on('close', () => this.hung.delete(res));
			return;
		}
		if (this.faults.length) {
			const f = this.faults.shift();
			this.sendJSON(res, f.status, f.body ?? errorBody('injected fault', 'server_error', null), f.headers);
			return;
		}
		if (this.requireKey != null) {
			const auth = req.headers.authorization || '';
			/* One key, or any of several (a key rotation's old and new). */
			if (![].concat(this.requireKey).some((k) => auth === `Bearer ${k}`)) {
				this.sendError(res, 401, 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.',
					'invalid_request_error', 'invalid_api_key');
				return;
			}
		}

		const { q, include } = parseQuery(url);
		let m;
		if (p === '/v1/responses' && req.method === 'POST') return this.create(req, res, body);
		if (p === '/v1/responses/input_tokens' && req.method === 'POST') {
			let j = {};
			try { j = JSON.parse(body || '{}'); } catch { /* ignore */ }
			const n = Math.max(1, Math.ceil(JSON.stringify(j.input ?? '').length / 4));
			return this.sendJSON(res, 200, { object: 'response.input_tokens', input_tokens: n });
		}
		if (p === '/v1/responses/compact' && req.method === 'POST') {
			return this.sendJSON(res, 200, {
				id: `cmp_${randHex(8)}`, object: 'response.compaction', created_at: now(), output: [],
				usage: { input_tokens: 1, output_tokens: 1, total_tokens: 2 },
			});
		}
		if ((m = /^\/v1\/responses\/([^/]+)$/.exec(p))) {
			const id = decodeURIComponent(m[1]);
			const rec = this.store.get(id);
			if (req.method === 'GET') {
				if (!rec || rec.deleted) return this.notFound(res, id);
				if (rec.status === 'queued') rec.status = 'in_progress';
				if (q.get('stream') === 'true') {
					const events = rec.events || this.buildEvents(rec);
					const after = q.has('starting_after') ? Number(q.get('starting_after')) : -1;
					return this.sendSSE(res, events.filter((e) => e.sequence_number > after));
				}
				return this.sendJSON(res, 200, this.responseObject(rec, include));
			}
			if (req.method === 'DELETE') {
				if (!rec || rec.deleted) return this.notFound(res, id);
				rec.deleted = true;
				return this.sendJSON(res, 200, { id, object: 'response.deleted', deleted: true });
			}
			return this.sendError(res, 405, `Method ${req.method} not allowed.`, 'invalid_request_error', null);
		}
		if ((m = /^\/v1\/responses\/([^/]+)\/cancel$/.exec(p)) && req.method === 'POST') {
			const id = decodeURIComponent(m[1]);
			const rec = this.store.get(id);
			if (!rec || rec.deleted) return this.notFound(res, id);
			if (!rec.background) {
				return this.sendError(res, 400, 'Cannot cancel a synchronous response.', 'invalid_request_error', null);
			}
			if (rec.status === 'queued' || rec.status === 'in_progress') {
				rec.status = 'cancelled';
				rec.completedAt = null;
			}
			return this.sendJSON(res, 200, this.responseObject(rec));
		}
		if ((m = /^\/v1\/responses\/([^/]+)\/input_items$/.exec(p)) && req.method === 'GET') {
			const id = decodeURIComponent(m[1]);
			const rec = this.store.get(id);
			if (!rec || rec.deleted) return this.notFound(res, id);
			const limit = q.has('limit') ? Number(q.get('limit')) : 20;
			const order = q.get('order') || 'desc';
			if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
				return this.sendError(res, 400, `Invalid 'limit': integer below minimum value.`, 'invalid_request_error', 'integer_below_min_value');
			}
			if (order !== 'asc' && order !== 'desc') {
				return this.sendError(res, 400, `Invalid value for 'order'.`, 'invalid_request_error', 'invalid_value');
			}
			let items = order === 'asc' ? rec.inputItems.slice() : rec.inputItems.slice().reverse();
			if (q.has('after')) {
				const i = items.findIndex((it) => it.id === q.get('after'));
				items = i < 0 ? [] : items.slice(i + 1);
			}
			const page = items.slice(0, limit);
			return this.sendJSON(res, 200, {
				object: 'list',
				data: page,
				first_id: page.length ? page[0].id : null,
				last_id: page.length ? page[page.length - 1].id : null,
				has_more: items.length > limit,
			});
		}
		return this.sendError(res, 404, `Invalid URL (${req.method} ${p})`, 'invalid_request_error', null);
	}

	async create(req, res, body) {
		let j;
		try {
			j = JSON.parse(body);
		} catch {
			return this.sendError(res, 400, 'We could not parse the JSON body of your request.', 'invalid_request_error', null);
		}
		if (!j || typeof j.model !== 'string') {
			return this.sendError(res, 400, "Missing required parameter: 'model'.", 'invalid_request_error', 'missing_required_parameter');
		}
		const rec = this.createRecord({
			model: j.model, input: j.input, background: j.background, store: j.store, stream: j.stream,
		});
		if (j.stream) {
			rec.status = 'completed';
			rec.completedAt = now();
			rec.events = this.buildEvents(rec);
			const hold = this.holdStream && typeof this.holdStream.then === 'function' ? this.holdStream : null;
			return this.sendSSE(res, rec.events, { hold });
		}
		return this.sendJSON(res, 200, this.responseObject(rec));
	}

	listen() {
		this.server = http.createServer((req, res) => {
			const chunks = [];
			req.on('data', (c) => chunks.push(c));
			req.on('end', () => {
				this.handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((e) => {
					try { res.destroy(e); } catch { /* ignore */ }
				});
			});
		});
		this.server.keepAliveTimeout = 30000;
		return new Promise((resolve, reject) => {
			this.server.once('error', reject);
			this.server.listen(0, '127.0.0.1', () => {
				this.port = this.server.address().port;
				this.url = `http://127.0.0.1:${this.port}`;
				resolve(this);
			});
		});
	}

	close() {
		for (const res of this.hung) {
			try { res.destroy(); } catch { /* ignore */ }
		}
		this.hung.clear();
		if (!this.server) return Promise.resolve();
		const s = this.server;
		this.server = null;
		return new Promise((resolve) => {
			s.close(() => resolve());
			s.closeAllConnections();
		});
	}
}

function startUpstream(opts = {}) {
	const up = new Upstream(opts);
	for (const k of ['hang', 'gzip', 'requireKey', 'streamDelayMs']) {
		if (k in opts) up[k] = opts[k];
	}
	return up.listen();
}

/* ------------------------------------------------------------------ */
/* The daemon                                                          */
/* ------------------------------------------------------------------ */

/* A report of ASan, LSan, UBSan or TSan (the TSan build: .ci/run). */
const SANITIZER_RE = /ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer|FATAL: ThreadSanitizer/;

function daemonPath() {
	return process.env.RESPCACHE || path.join(__dirname, '../../src/respcache');
}

function tail(s, n = 6000) {
	return s.length > n ? '...' + s.slice(-n) : s;
}

function startProxy(opts = {}) {
	const bin = daemonPath();
	if (!fs.existsSync(bin)) {
		return Promise.reject(new Error(`respcache binary not found at ${bin} (build it with make, or set RESPCACHE)`));
	}
	if (!opts.upstream) return Promise.reject(new Error('startProxy: opts.upstream is required'));
	const cacheDir = opts.cacheDir || tmpdir();
	const args = ['--listen', opts.listen || '127.0.0.1:0', '--upstream', opts.upstream, '--cache-dir', cacheDir];
	/* An ephemeral admin port, so that tests run side by side; admin: '' turns it off. */
	if (opts.admin !== undefined) args.push('--admin-listen', opts.admin);
	else if (!(opts.config || '').includes('admin_listen')) args.push('--admin-listen', '127.0.0.1:0');
	if (opts.config != null) {
		const f = path.join(tmpdir(), 'respcache.conf');
		fs.writeFileSync(f, opts.config);
		args.push('--config', f);
	}
	if (opts.keyFile) args.push('--upstream-key-file', opts.keyFile);
	if (opts.args) args.push(...opts.args);

	/* ASAN_, UBSAN_ and TSAN_OPTIONS pass through; opts.env adds to them. */
	const env = { ...process.env, ...(opts.env || {}) };
	/*
	 * opts.wrap: a command that sets something up and then execs the
	 * daemon (prlimit, setpriv), so that proc.pid is still the daemon's.
	 */
	const wrap = opts.wrap || [];
	const proc = wrap.length ?
		spawn(wrap[0], [...wrap.slice(1), bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env }) :
		spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
	liveProcs.add(proc);
	let errText = '';
	let outText = '';
	proc.on('exit', () => liveProcs.delete(proc));
	/*
	 * 'close', not 'exit': only then has all the daemon wrote to its
	 * stderr been read, a sanitizer's report at exit included.
	 */
	const exited = new Promise((resolve) => {
		proc.on('close', (code, signal) => resolve({ code, signal }));
	});
	proc.stdout.setEncoding('utf8');
	proc.stderr.setEncoding('utf8');
	proc.stdout.on('data', (d) => { outText += d; });
	if (process.env.RESPCACHE_VERBOSE) proc.stderr.pipe(process.stderr);

	return new Promise((resolve, reject) => {
		let settled = false;
		const fail = (msg) => {
			if (settled) return;
			settled = true;
			clearTimeout(timer);
			try { proc.kill('SIGKILL'); } catch { /* ignore */ }
			reject(new Error(`${msg}\ncommand: ${bin} ${args.join(' ')}\n--- stderr ---\n${tail(errText)}`));
		};
		const timer = setTimeout(() => fail('respcache did not print "listening on" within 10 s'), 10000);
		proc.on('error', (e) => fail(`cannot run respcache: ${e.message}`));
		exited.then(({ code, signal }) => fail(`respcache exited before it was ready (code ${code}, signal ${signal})`));
		proc.stderr.on('data', (d) => {
			errText += d;
			if (settled) return;
			const m = /respcache: listening on (\[[^\]]+\]|[^\s:]+):(\d+)/.exec(errText);
			if (!m) return;
			settled = true;
			clearTimeout(timer);
			const port = Number(m[2]);
			const host = m[1].replace(/^\[|\]$/g, '');
			const am = /respcache: admin on (\[[^\]]+\]|[^\s:]+):(\d+)/.exec(errText);
			const px = {
				url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
				adminUrl: am ? `http://${am[1]}:${am[2]}` : null,
				host,
				port,
				pid: proc.pid,
				proc,
				cacheDir,
				args,
				exited,
				stderr: () => errText,
				stdout: () => outText,
				/*
				 * Wait (ms at most) for the exit a test caused, and check it
				 * was clean: code 0 and no sanitizer report.
				 */
				async exitsCleanly(ms = 10000, what = 'respcache exit') {
					let r;
					try {
						r = await within(exited, ms, what);
					} catch (e) {
						try { process.kill(proc.pid, 'SIGKILL'); } catch { /* ignore */ }
						await within(exited, 5000, 'respcache exit after SIGKILL').catch(() => {});
						throw new Error(`respcache (pid ${proc.pid}) did not exit within ${ms} ms (${what})\n--- stderr ---\n${tail(errText)}`);
					}
					this.checkSanitizers();
					if (r.code !== 0) {
						throw new Error(`respcache exited with code ${r.code}, signal ${r.signal} (expected 0; ${what})\n--- stderr ---\n${tail(errText)}`);
					}
					return r;
				},
				/*
				 * Throw if a sanitizer has reported on stderr so far: for a
				 * daemon a test kills, as ThreadSanitizer reports as it goes.
				 */
				checkSanitizers() {
					if (SANITIZER_RE.test(errText)) {
						throw new Error(`sanitizer report in respcache's stderr\n--- stderr ---\n${tail(errText, 20000)}`);
					}
				},
				async stop() {
					if (proc.exitCode !== null || proc.signalCode !== null) {
						throw new Error(`respcache (pid ${proc.pid}) had already exited (code ${proc.exitCode}, signal ${proc.signalCode}) before stop()\n--- stderr ---\n${tail(errText)}`);
					}
					process.kill(proc.pid, 'SIGTERM');
					return this.exitsCleanly(10000, 'exit after SIGTERM');
				},
			};
			resolve(px);
		});
	});
}

/*
 * Start an upstream and a proxy in front of it, run fn({up, px}), and always
 * stop both; the proxy's stop() checks for a clean exit.  An error from fn is
 * kept, with any stop error appended to it.
 */
async function withStack({ upstream = {}, proxy = {} } = {}, fn) {
	return withProxy(await startUpstream(upstream), proxy, fn);
}

/*
 * The same with an upstream of the test's own (anything with url and
 * close()): a proxy in front of it, fn({up, px}), both always stopped.
 */
async function withProxy(up, proxy, fn) {
	let px;
	try {
		px = await startProxy({ upstream: up.url, ...proxy });
	} catch (e) {
		await up.close();
		throw e;
	}
	let err = null;
	try {
		await fn({ up, px });
	} catch (e) {
		err = e;
	}
	try {
		await px.stop();
	} catch (e) {
		if (err) {
			err.message += `\n\n[and then, stopping the proxy] ${e.message}`;
		} else {
			err = e;
		}
	}
	await up.close();
	if (err) {
		if (process.env.RESPCACHE_VERBOSE) console.error(px.stderr());
		throw err;
	}
}

/* ------------------------------------------------------------------ */
/* Client side                                                         */
/* ------------------------------------------------------------------ */

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const DEFAULT_AUTH = 'Bearer sk-test';

function buildRequest(url, { method = 'GET', headers = {}, body } = {}) {
	const h = {};
	for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v;
	if (!('authorization' in h)) h.authorization = DEFAULT_AUTH;
	if (h.authorization == null) delete h.authorization;
	let data = null;
	if (body !== undefined && body !== null) {
		if (Buffer.isBuffer(body) || typeof body === 'string') {
			data = Buffer.from(body);
		} else {
			data = Buffer.from(JSON.stringify(body));
			if (!('content-type' in h)) h['content-type'] = 'application/json';
		}
		h['content-length'] = String(data.length);
	}
	return { h, data, method };
}

/*
 * One request.  Sends "Authorization: Bearer sk-test" unless headers say
 * otherwise (authorization: null sends none).  A JSON-able body is sent as
 * JSON.  Resolves {status, headers, body, raw, json(), ms}.
 */
function request(url, opts = {}) {
	const { h, data, method } = buildRequest(url, opts);
	const timeout = opts.timeout ?? 10000;
	const t0 = Date.now();
	return new Promise((resolve, reject) => {
		const req = http.request(url, { method, headers: h, agent: opts.agent ?? agent });
		const timer = setTimeout(() => {
			req.destroy(new Error(`no complete answer within ${timeout} ms: ${method} ${url}`));
		}, timeout);
		req.on('error', (e) => {
			clearTimeout(timer);
			reject(e);
		});
		req.on('response', (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('error', (e) => { clearTimeout(timer); reject(e); });
			res.on('end', () => {
				clearTimeout(timer);
				const raw = Buffer.concat(chunks);
				const body = raw.toString('utf8');
				resolve({
					status: res.statusCode,
					headers: res.headers,
					raw,
					body,
					ms: Date.now() - t0,
					json() {
						try {
							return JSON.parse(body);
						} catch (e) {
							throw new Error(`answer to ${method} ${url} is not JSON (status ${res.statusCode}): ${JSON.stringify(body.slice(0, 300))}`);
						}
					},
				});
			});
		});
		req.end(data ?? undefined);
	});
}

/* Split SSE text into events; returns [events, rest]. */
function parseSSEChunk(buf) {
	const events = [];
	for (;;) {
		const m = /\r?\n\r?\n/.exec(buf);
		if (!m) break;
		const block = buf.slice(0, m.index);
		buf = buf.slice(m.index + m[0].length);
		let event = null;
		const data = [];
		for (const line of block.split(/\r?\n/)) {
			if (line === '' || line.startsWith(':')) continue;
			const i = line.indexOf(':');
			const field = i < 0 ? line : line.slice(0, i);
			let value = i < 0 ? '' : line.slice(i + 1);
			if (value.startsWith(' ')) value = value.slice(1);
			if (field === 'event') event = value;
			else if (field === 'data') data.push(value);
		}
		if (event === null && data.length === 0) continue;
		const text = data.join('\n');
		let json = null;
		try { json = JSON.parse(text); } catch { /* not JSON */ }
		events.push({ event, data: text, json });
	}
	return [events, buf];
}

/*
 * Open an SSE request.  Resolves, once the status line and headers are in,
 * to {status, headers, events, firstEvent, done, abort()}: firstEvent
 * resolves with the first event as soon as it has arrived, done with
 * {events, text} when the answer has ended (bounded by opts.timeout).
 */
function openSSE(url, opts = {}) {
	const { h, data, method } = buildRequest(url, opts);
	const timeout = opts.timeout ?? 10000;
	return new Promise((resolve, reject) => {
		const req = http.request(url, { method, headers: h, agent: opts.agent ?? agent });
		const timer = setTimeout(() => {
			req.destroy(new Error(`stream did not end within ${timeout} ms: ${method} ${url}`));
		}, timeout);
		req.on('error', (e) => { clearTimeout(timer); reject(e); });
		req.on('response', (res) => {
			res.setEncoding('utf8');
			const events = [];
			let text = '';
			let buf = '';
			let gotFirst;
			let firstFail;
			const firstEvent = new Promise((r, j) => { gotFirst = r; firstFail = j; });
			firstEvent.catch(() => {});
			const done = new Promise((r, j) => {
				res.on('data', (d) => {
					text += d;
					buf += d;
					let evs;
					[evs, buf] = parseSSEChunk(buf);
					for (const e of evs) {
						events.push(e);
						if (events.length === 1) gotFirst(e);
					}
				});
				res.on('end', () => {
					clearTimeout(timer);
					if (!events.length) firstFail(new Error(`stream ended with no event (status ${res.statusCode}): ${text.slice(0, 300)}`));
					r({ events, text });
				});
				const onErr = (e) => { clearTimeout(timer); firstFail(e); j(e); };
				res.on('error', onErr);
				req.on('error', onErr);
			});
			done.catch(() => {});
			resolve({
				status: res.statusCode,
				headers: res.headers,
				events,
				firstEvent,
				done,
				abort: () => req.destroy(),
			});
		});
		req.end(data ?? undefined);
	});
}

/*
 * Write raw bytes to 127.0.0.1:port and read one HTTP answer (by
 * content-length, chunked end, or connection close).  Resolves
 * {status, headers, body, raw}; rejects if no complete answer within
 * opts.timeout ms.
 */
function rawRequest(port, text, { timeout = 5000, host = '127.0.0.1' } = {}) {
	return new Promise((resolve, reject) => {
		const sock = net.connect(port, host);
		let buf = Buffer.alloc(0);
		let finished = false;
		const timer = setTimeout(() => {
			finish(new Error(`no complete answer within ${timeout} ms to ${JSON.stringify(text.slice(0, 120))}; got ${JSON.stringify(buf.toString('latin1').slice(0, 300))}`));
		}, timeout);
		function finish(err, val) {
			if (finished) return;
			finished = true;
			clearTimeout(timer);
			sock.destroy();
			if (err) reject(err); else resolve(val);
		}
		function tryParse(closed) {
			const s = buf.toString('latin1');
			const he = s.indexOf('\r\n\r\n');
			if (he < 0) {
				if (closed) finish(new Error(`connection closed without a complete header: ${JSON.stringify(s.slice(0, 300))}`));
				return;
			}
			const lines = s.slice(0, he).split('\r\n');
			const sm = /^HTTP\/\d\.\d (\d{3})/.exec(lines[0]);
			if (!sm) return finish(new Error(`bad status line: ${JSON.stringify(lines[0])}`));
			const headers = {};
			for (const l of lines.slice(1)) {
				const i = l.indexOf(':');
				if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
			}
			const status = Number(sm[1]);
			const bodyBuf = buf.subarray(he + 4);
			const done = (body) => finish(null, { status, headers, body, raw: s });
			if (status === 304 || status === 204 || (status >= 100 && status < 200)) return done('');
			if (headers['content-length'] !== undefined) {
				const n = Number(headers['content-length']);
				if (bodyBuf.length >= n) return done(bodyBuf.subarray(0, n).toString('utf8'));
			} else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
				const b = bodyBuf.toString('latin1');
				if (/(^|\r\n)0\r\n\r\n$/.test(b)) {
					let out = '';
					let rest = b;
					for (;;) {
						const i = rest.indexOf('\r\n');
						const n = parseInt(rest.slice(0, i), 16);
						if (!n) break;
						out += rest.slice(i + 2, i + 2 + n);
						rest = rest.slice(i + 2 + n + 2);
					}
					return done(Buffer.from(out, 'latin1').toString('utf8'));
				}
			}
			if (closed) done(bodyBuf.toString('utf8'));
		}
		sock.on('data', (d) => { buf = Buffer.concat([buf, d]); tryParse(false); });
		sock.on('end', () => tryParse(true));
		sock.on('close', () => tryParse(true));
		sock.on('error', (e) => finish(e));
		sock.write(text);
	});
}

/*
 * Parse every complete HTTP answer in buf (Content-Length or chunked
 * framing; an answer with neither ends at the end of buf).
 */
function parseAnswers(buf) {
	const s = Buffer.isBuffer(buf) ? buf.toString('latin1') : buf;
	const out = [];
	let at = 0;
	while (at < s.length) {
		const he = s.indexOf('\r\n\r\n', at);
		if (he < 0) break;
		const lines = s.slice(at, he).split('\r\n');
		const sm = /^HTTP\/\d\.\d (\d{3})/.exec(lines[0]);
		if (!sm) break;
		const headers = {};
		for (const l of lines.slice(1)) {
			const i = l.indexOf(':');
			if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
		}
		const status = Number(sm[1]);
		let p = he + 4;
		let body = '';
		if (status === 304 || status === 204 || status < 200) {
			/* no body */
		} else if (headers['content-length'] !== undefined) {
			const n = Number(headers['content-length']);
			if (s.length - p < n) break;
			body = s.slice(p, p + n);
			p += n;
		} else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
			let ok = false;
			for (;;) {
				const i = s.indexOf('\r\n', p);
				if (i < 0) break;
				const n = parseInt(s.slice(p, i), 16);
				if (Number.isNaN(n)) break;
				if (n === 0) {
					const e = s.indexOf('\r\n\r\n', i);
					if (e < 0) break;
					p = e + 4;
					ok = true;
					break;
				}
				body += s.slice(i + 2, i + 2 + n);
				p = i + 2 + n + 2;
			}
			if (!ok) break;
		} else {
			body = s.slice(p);
			p = s.length;
		}
		out.push({ status, headers, body: Buffer.from(body, 'latin1').toString('utf8') });
		at = p;
	}
	return out;
}

/*
 * Write bytes (a string or Buffer, or a list of them, each written as its
 * own segment once the last is acknowledged, for separate reads on the
 * proxy's side) and read until the proxy closes the connection, or want
 * answers are in (closed: false), or waitMs passes.  Resolves {answers,
 * status (of the first, 0 if none), closed, raw, ms}.
 */
function exchange(port, pieces, { waitMs = 4000, want = Infinity } = {}) {
	return new Promise((resolve) => {
		const t0 = Date.now();
		const sock = net.connect(port, '127.0.0.1');
		sock.setNoDelay(true);
		let buf = '';
		let done = false;
		const finish = (closed) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			sock.destroy();
			const answers = parseAnswers(buf);
			const m = /^HTTP\/1\.\d (\d{3})/.exec(buf);
			resolve({ answers, status: m ? Number(m[1]) : 0, closed, raw: buf, ms: Date.now() - t0 });
		};
		const timer = setTimeout(() => finish(false), waitMs);
		sock.on('data', (d) => {
			buf += d.toString('latin1');
			if (parseAnswers(buf).length >= want) finish(false);
		});
		sock.on('close', () => finish(true));
		sock.on('error', () => { /* a reset after the answer: close follows */ });
		const list = Array.isArray(pieces) ? pieces : [pieces];
		sock.once('connect', async () => {
			for (const [i, p] of list.entries()) {
				if (done) return;
				await new Promise((r) => sock.write(Buffer.isBuffer(p) ? p : Buffer.from(p, 'latin1'), r));
				/* Separate reads on the proxy's side: a pause, not a readiness wait. */
				if (i < list.length - 1) await delay(15);
			}
		});
	});
}

/* ------------------------------------------------------------------ */
/* Assertions                                                          */
/* ------------------------------------------------------------------ */

/* An answer in the OpenAI error shape with the given status. */
function assertOpenAIError(res, status, what = '') {
	const ctx = `${what} -> ${res.status} ${JSON.stringify(res.body.slice(0, 300))}`;
	if (status != null) assert.equal(res.status, status, `status: ${ctx}`);
	assert.match(res.headers['content-type'] || '', /^application\/json/, `content-type: ${ctx}`);
	let j;
	try {
		j = JSON.parse(res.body);
	} catch {
		assert.fail(`error body is not JSON: ${ctx}`);
	}
	assert.ok(j && typeof j.error === 'object' && j.error !== null, `no "error" object: ${ctx}`);
	for (const k of ['message', 'type', 'param', 'code']) {
		assert.ok(k in j.error, `error.${k} missing: ${ctx}`);
	}
	assert.equal(typeof j.error.message, 'string', `error.message: ${ctx}`);
	assert.ok(j.error.message.length > 0, `error.message empty: ${ctx}`);
	assert.equal(typeof j.error.type, 'string', `error.type: ${ctx}`);
	assert.equal(j.error.param, null, `error.param: ${ctx}`);
	return j;
}

/* The X-Cache header of an answer, with a readable failure. */
function assertXCache(res, expected, what = '') {
	assert.equal(res.headers['x-cache'], expected,
		`X-Cache of ${what}: got ${res.headers['x-cache']} (status ${res.status})`);
}

/* Hold every upstream GET until the test answers it; returns the held list. */
function holdGets(up) {
	const held = [];
	up.override = (req, res) => {
		if (req.method !== 'GET') return false;
		held.push({ req, res });
		return true;
	};
	return held;
}

/*
 * A gauge or counter from the admin listener's /metrics: name with its
 * labels exactly as rendered ('{state="waiting"}'), 0 when absent.
 */
async function metric(px, name, labels = '') {
	const r = await request(`${px.adminUrl}/metrics`, { headers: { authorization: null }, agent: false });
	const line = r.body.split('\n').find((l) => l.startsWith(`${name}${labels} `));
	return line ? Number(line.split(' ')[1]) : 0;
}

/* Requests the proxy holds in one state (proxy_int.h): waiting, orphaned... */
function inState(px, state) {
	return metric(px, 'respcache_requests_by_state', `{state="${state}"}`);
}

/* A process of a test's own (a redis-server): SIGKILLed if it outlives the test. */
function track(proc) {
	liveProcs.add(proc);
	proc.on('exit', () => liveProcs.delete(proc));
	return proc;
}

module.exports = {
	track,
	metric,
	inState,
	startUpstream,
	holdGets,
	startProxy,
	withStack,
	withProxy,
	request,
	openSSE,
	rawRequest,
	parseAnswers,
	exchange,
	parseSSEChunk,
	parseQuery,
	tmpdir,
	freePort,
	until,
	within,
	pipesRead,
	delay,
	assertOpenAIError,
	assertXCache,
	daemonPath,
	Upstream,
	DEFAULT_AUTH,
	SANITIZER_RE,
};
