'use strict';
// A request that may have reached the upstream is never sent again when its
// connection dies before the answer: not by libcurl's silent retry on a
// fresh connection ("Connection died, retrying a fresh connect"), and not by
// the client's SDK, which the 502 tells not to retry (x-should-retry:
// false).  A create or a cancel sent twice is a second generation, or a
// second cancel, the user pays for.  Idempotent requests (GET) keep curl's
// retry.
//
// The upstream here is a small HTTP/1.1 server on a raw socket, so that the
// test decides what happens to each connection: it answers a request, or
// reads the whole request and closes the connection without answering.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const h = require('../lib/harness');

/*
 * A raw HTTP/1.1 upstream.  plan(req) says what to do with each request
 * once it has been read whole: 'answer' (200, keep-alive) or 'drop' (close
 * the connection without a byte of answer).  req carries method, path,
 * body, conn (the connection's number, from 0) and seq (the request's
 * number on its connection, from 0).
 */
function rawUpstream(plan) {
	const up = { requests: [], conns: 0, sockets: new Set(), plan };
	let nid = 0;
	up.count = (method, p) => up.requests.filter((r) => r.method === method &&
		(p instanceof RegExp ? p.test(r.path) : r.path === p)).length;
	up.server = net.createServer((sock) => {
		const conn = up.conns++;
		let seq = 0;
		let buf = Buffer.alloc(0);
		up.sockets.add(sock);
		sock.on('close', () => up.sockets.delete(sock));
		sock.on('error', () => {});
		sock.on('data', (d) => {
			buf = Buffer.concat([buf, d]);
			for (;;) {
				const end = buf.indexOf('\r\n\r\n');
				if (end < 0) return;
				const head = buf.subarray(0, end).toString('latin1').split('\r\n');
				const [method, target] = head[0].split(' ');
				const hdrs = {};
				for (const l of head.slice(1)) {
					const i = l.indexOf(':');
					hdrs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
				}
				assert.equal(hdrs['transfer-encoding'], undefined, 'the proxy sends a Content-Length');
				const len = Number(hdrs['content-length'] || 0);
				if (buf.length < end + 4 + len) return;
				const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
				buf = buf.subarray(end + 4 + len);
				const req = { method, path: target.split('?')[0], body, conn, seq: seq++, headers: hdrs };
				up.requests.push(req);
				if (up.plan(req) === 'drop') {
					sock.destroy();
					return;
				}
				let obj;
				let m;
				if (req.path === '/v1/responses') {
					obj = { id: `resp_new${++nid}`, object: 'response', status: 'completed', output: [] };
				} else if ((m = /^\/v1\/responses\/([^/]+)\/cancel$/.exec(req.path))) {
					obj = { id: m[1], object: 'response', status: 'cancelled', output: [] };
				} else if ((m = /^\/v1\/responses\/([^/]+)$/.exec(req.path))) {
					obj = { id: m[1], object: 'response', status: 'completed', output: [] };
				} else {
					obj = { error: { message: 'no such route', type: 'invalid_request_error', param: null, code: null } };
				}
				const out = Buffer.from(JSON.stringify(obj));
				sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n` +
					`Content-Length: ${out.length}\r\nConnection: keep-alive\r\n\r\n`);
				sock.write(out);
			}
		});
	});
	return new Promise((resolve, reject) => {
		up.server.on('error', reject);
		up.server.listen(0, '127.0.0.1', () => {
			up.url = `http://127.0.0.1:${up.server.address().port}`;
			up.close = () => new Promise((r) => {
				for (const s of up.sockets) s.destroy();
				up.server.close(() => r());
			});
			resolve(up);
		});
	});
}

/*
 * The raw upstream and a one-worker proxy in front of it (one worker: one
 * curl connection pool, so the second request goes over the first one's
 * connection), both always stopped.
 */
async function withRaw(plan, fn) {
	return h.withProxy(await rawUpstream(plan), {
		config: '[server]\nworkers = 1\n[upstream]\ntimeout = 5\nconnect_timeout = 2\n' +
			(process.env.RESPCACHE_VERBOSE ? '[log]\nlevel = debug\n' : ''),
	}, fn);
}

/* The second request on any connection: read whole, then the close. */
const dropReused = (r) => (r.seq === 1 ? 'drop' : 'answer');

/* A GET answered with keep-alive, so that curl keeps its connection. */
async function warm(px, up) {
	const r = await h.request(`${px.url}/v1/responses/resp_warm${up.requests.length}`);
	assert.equal(r.status, 200, r.body);
	assert.equal(up.requests[up.requests.length - 1].seq, 0);
}

function assertConnectionLost(r, what) {
	const j = h.assertOpenAIError(r, 502, what);
	assert.equal(j.error.code, 'upstream_connection_lost', `${what}: ${r.body}`);
	assert.equal(j.error.type, 'upstream_error');
	assert.match(j.error.message, /may have reached/, j.error.message);
	assert.equal(r.headers['x-should-retry'], 'false', `${what}: x-should-retry`);
}

test('a create whose reused connection dies after it was sent: sent once, 502 upstream_connection_lost', async () => {
	await withRaw(dropReused, async ({ up, px }) => {
		await warm(px, up);
		const r = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'once only' },
		});
		assertConnectionLost(r, 'create');
		assert.equal(up.count('POST', '/v1/responses'), 1, 'the create reached the upstream once');
		const c = up.requests.find((q) => q.method === 'POST');
		assert.equal(c.seq, 1, 'it went over the warm connection');
		assert.equal(JSON.parse(c.body).input, 'once only', 'the upstream read the whole create');
		// curl connects afresh before it asks whether to send again.
		assert.ok(up.requests.every((q) => q.conn === 0), 'no fresh connection carried it again');
		const m = await h.request(`${px.adminUrl}/metrics`, { headers: { authorization: null } });
		assert.match(m.body, /^respcache_upstream_errors_total\{kind="protocol"\} 1$/m,
			'counted as an upstream protocol error');

		// The proxy goes on: the next create gets a connection of its own.
		const r2 = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'next' },
		});
		assert.equal(r2.status, 200, r2.body);
		assert.equal(up.count('POST', '/v1/responses'), 2);
	});
});

test('a cancel (empty body) whose reused connection dies after it was sent: sent once, 502', async () => {
	await withRaw(dropReused, async ({ up, px }) => {
		await warm(px, up);
		const p = '/v1/responses/resp_abc123/cancel';
		const r = await h.request(px.url + p, {
			method: 'POST', body: '', headers: { 'content-length': '0' },
		});
		assertConnectionLost(r, 'cancel');
		assert.equal(up.count('POST', p), 1, 'the cancel reached the upstream once');
		assert.equal(up.requests.find((q) => q.method === 'POST').body, '');
	});
});

test('a GET whose reused connection dies is retried on a fresh connection: 200', async () => {
	await withRaw(dropReused, async ({ up, px }) => {
		await warm(px, up);
		const p = '/v1/responses/resp_get1';
		const r = await h.request(px.url + p);
		assert.equal(r.status, 200, r.body);
		assert.equal(r.json().id, 'resp_get1');
		const gets = up.requests.filter((q) => q.path === p);
		assert.deepEqual(gets.map((q) => [q.conn, q.seq]), [[0, 1], [1, 0]],
			'dropped on the warm connection, answered on a fresh one');
	});
});

test('a create whose fresh connection dies without an answer: sent once, 502 upstream_connection_lost', async () => {
	// No curl retry here (the connection was new), but a plain 502 would
	// have the SDKs send the create again.
	await withRaw((r) => (r.method === 'POST' && r.conn === 0 ? 'drop' : 'answer'), async ({ up, px }) => {
		const r = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'fresh' },
		});
		assertConnectionLost(r, 'create on a fresh connection');
		assert.equal(up.count('POST', '/v1/responses'), 1);
	});
});

test('a create after the upstream closed the idle connection: curl connects afresh, 200, sent once', async () => {
	// The connection dies before any byte of the create is written: curl
	// sees the idle connection is closed and does not use it, so nothing
	// is retried and nothing is refused.
	await withRaw(() => 'answer', async ({ up, px }) => {
		await warm(px, up);
		for (const s of up.sockets) s.destroy();
		await h.until(() => up.sockets.size === 0, { timeoutMs: 2000, what: 'the idle connection closed' });
		const r = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'after idle close' },
		});
		assert.equal(r.status, 200, r.body);
		assert.equal(up.count('POST', '/v1/responses'), 1);
		assert.deepEqual(up.requests.filter((q) => q.method === 'POST').map((q) => [q.conn, q.seq]), [[1, 0]]);
	});
});

// tests/node_modules first; then NODE_PATH (as in sdk.test.js).
function loadOpenAI() {
	try {
		return require(require.resolve('openai', { paths: [path.join(__dirname, '..')] }));
	} catch (e) {
		return require('openai');
	}
}

test('the openai SDK raises the 502 once and does not send the create again', async (t) => {
	let OpenAI;
	try {
		const mod = loadOpenAI();
		OpenAI = mod.OpenAI || mod.default || mod;
	} catch (e) {
		t.skip(`the openai package is not installed: ${e.message}`);
		return;
	}
	await withRaw(dropReused, async ({ up, px }) => {
		// maxRetries 2 (the SDK's default) would resend a 502 without the header.
		const oa = new OpenAI({ baseURL: px.url + '/v1', apiKey: 'sk-test', maxRetries: 2, timeout: 10000 });
		const w = await oa.responses.retrieve('resp_warm');
		assert.equal(w.id, 'resp_warm');
		let raised = 0;
		await assert.rejects(oa.responses.create({ model: 'gpt-4o', input: 'once' }).catch((e) => {
			raised++;
			throw e;
		}), (e) => {
			assert.equal(e.status, 502);
			assert.equal(e.code, 'upstream_connection_lost');
			assert.equal(e.headers.get('x-should-retry'), 'false');
			return true;
		});
		assert.equal(raised, 1);
		assert.equal(up.count('POST', '/v1/responses'), 1, 'the upstream saw one create');
	});
});
