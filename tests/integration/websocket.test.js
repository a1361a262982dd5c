'use strict';
// WebSocket mode on GET /v1/responses: the client's WebSocket relayed to the
// upstream's with the proxy's key; frames, pings and closes both ways; the
// upstream's refusal as the client's HTTP answer; 426 when off.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { WebSocket, WebSocketServer } = require('ws');
const h = require('../lib/harness');

/*
 * A WebSocket upstream on loopback: every upgrade on /v1/responses is
 * recorded (url, headers) and handed to onSocket(ws, req); refuse(req) may
 * answer instead ([status, body]).
 */
function startWsUpstream({ onSocket = () => {}, refuse = () => null, tls = null } = {}) {
	const upgrades = [];
	const plain = [];		/* HTTP requests that were no upgrade */
	const sockets = new Set();
	const notFound = (req, res) => { plain.push(`${req.method} ${req.url}`); res.writeHead(404); res.end(); };
	const server = tls ? require('node:https').createServer(tls, notFound) : http.createServer(notFound);
	const wss = new WebSocketServer({ noServer: true });
	server.on('upgrade', (req, socket, head) => {
		upgrades.push({ url: req.url, headers: req.headers });
		const no = refuse(req);
		if (no) {
			const body = JSON.stringify(no[1]);
			socket.end(`HTTP/1.1 ${no[0]} Refused\r\nContent-Type: application/json\r\n` +
				`Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
			return;
		}
		wss.handleUpgrade(req, socket, head, (ws) => {
			sockets.add(ws);
			ws.on('close', () => sockets.delete(ws));
			onSocket(ws, req);
		});
	});
	return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
		url: `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`,
		upgrades,
		plain,
		sockets,
		close: () => new Promise((r) => {
			for (const ws of sockets) ws.terminate();
			wss.close();
			server.close(() => r());
		}),
	})));
}

/* An echo upstream: each message back as it came; "close:CODE:REASON" closes. */
function echo(ws) {
	ws.on('message', (data, isBinary) => {
		const s = isBinary ? null : data.toString();
		if (s && s.startsWith('close:')) {
			const [, code, reason] = s.split(':');
			ws.close(Number(code), reason);
			return;
		}
		ws.send(data, { binary: isBinary });
	});
}

function wsUrl(px, p = '/v1/responses') {
	return px.url.replace(/^http/, 'ws') + p;
}

/* Open a client WebSocket; resolves once open, rejects on a refused handshake. */
function open(url, headers = { authorization: 'Bearer sk-client' }) {
	return new Promise((resolve, reject) => {
		const ws = new WebSocket(url, { headers });
		const messages = [];
		const waiters = [];
		ws.on('message', (data, isBinary) => {
			messages.push({ data, isBinary });
			for (const w of waiters.splice(0)) w();
		});
		ws.next = (n = 1) => h.until(() => messages.length >= n, { what: `${n} message(s)` })
			.then(() => messages.splice(0, n));
		ws.once('open', () => resolve(ws));
		ws.once('unexpected-response', (req, res) => {
			let body = '';
			res.on('data', (d) => { body += d; });
			res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
		});
		ws.once('error', reject);
	});
}

function closed(ws) {
	return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

async function withWs(upOpts, proxyOpts, fn) {
	const up = await startWsUpstream(upOpts);
	await h.withProxy(up, proxyOpts, fn);
}

function keyFile(key) {
	const f = path.join(h.tmpdir(), 'key');
	fs.writeFileSync(f, `${key}\n`, { mode: 0o600 });
	return f;
}

test('text and binary messages pass both ways; the upstream sees the proxy\'s key, never the client\'s', async () => {
	await withWs({ onSocket: echo }, { keyFile: keyFile('sk-upstream-KEY') }, async ({ up, px }) => {
		const ws = await open(wsUrl(px), { authorization: 'Bearer sk-client-own', 'openai-beta': 'responses_websockets=1', 'x-secret': 'no' });
		ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-4o', input: 'hi' }));
		const [m1] = await ws.next();
		assert.equal(m1.isBinary, false);
		assert.deepEqual(JSON.parse(m1.data.toString()), { type: 'response.create', model: 'gpt-4o', input: 'hi' });
		const bin = Buffer.from([0, 1, 2, 255, 254]);
		ws.send(bin);
		const [m2] = await ws.next();
		assert.equal(m2.isBinary, true);
		assert.deepEqual(Buffer.from(m2.data), bin);
		// A large text message (1 MB), whole.
		const big = 'x'.repeat(1024 * 1024);
		ws.send(big);
		const [m3] = await ws.next();
		assert.equal(m3.data.toString(), big);
		assert.equal(up.upgrades.length, 1);
		const u = up.upgrades[0];
		assert.equal(u.url, '/v1/responses');
		assert.equal(u.headers.authorization, 'Bearer sk-upstream-KEY', 'the proxy\'s key');
		assert.equal(u.headers['openai-beta'], 'responses_websockets=1', 'an allow-listed header passes');
		assert.equal(u.headers['x-secret'], undefined, 'other client headers do not');
		assert.equal(await h.metric(px, 'respcache_websockets_open'), 1, 'one socket open');
		assert.equal(await h.metric(px, 'respcache_websocket_messages_total', '{direction="to_upstream"}'), 3);
		assert.equal(await h.metric(px, 'respcache_websocket_messages_total', '{direction="to_client"}'), 3);
		assert.ok(await h.metric(px, 'respcache_websocket_bytes_total', '{direction="to_client"}') > 1024 * 1024);
		const c = closed(ws);
		ws.close(1000, 'bye');
		assert.deepEqual(await c, { code: 1000, reason: 'bye' });
		await h.until(async () => await h.metric(px, 'respcache_websockets_open') === 0, { what: 'the socket counted closed' });
	});
});

test('close codes and reasons pass both ways', async () => {
	await withWs({ onSocket: echo }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		const c = closed(ws);
		ws.send('close:4001:upstream says so');
		assert.deepEqual(await c, { code: 4001, reason: 'upstream says so' });

		let upClose;
		const upClosed = new Promise((r) => { upClose = r; });
		const up2 = await startWsUpstream({ onSocket: (s) => s.on('close', (code, reason) => upClose({ code, reason: reason.toString() })) });
		try {
			await h.withProxy(up2, {}, async ({ px: px2 }) => {
				const ws2 = await open(wsUrl(px2));
				ws2.close(4002, 'client says so');
				assert.deepEqual(await h.within(upClosed, 5000, 'the upstream\'s close'), { code: 4002, reason: 'client says so' });
			});
		} finally {
			await up2.close();
		}
	});
});

test('pings pass: the upstream sees the client\'s ping, and the client gets its pong', async () => {
	let pinged;
	const upPing = new Promise((r) => { pinged = r; });
	await withWs({ onSocket: (s) => s.on('ping', (d) => pinged(d.toString())) }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		const pong = new Promise((r) => ws.once('pong', (d) => r(d.toString())));
		ws.ping('are you there');
		assert.equal(await h.within(pong, 5000, 'the pong'), 'are you there');
		assert.equal(await h.within(upPing, 5000, 'the upstream\'s ping'), 'are you there');
		ws.close();
	});
});

test('the upstream refuses the handshake: the client gets its status and body, no WebSocket', async () => {
	const body = { error: { message: 'Incorrect API key provided', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } };
	await withWs({ refuse: () => [401, body] }, {}, async ({ px }) => {
		await assert.rejects(open(wsUrl(px)), (e) => e.status === 401 && JSON.parse(e.body).error.code === 'invalid_api_key');
	});
});

test('a client key unknown to [client]: 401 before any upstream connection', async () => {
	const crypto = require('node:crypto');
	const config = `[credential team]\nkey_file = ${keyFile('sk-up')}\n` +
		`[client alice]\ntoken_sha256 = ${crypto.createHash('sha256').update('tok-alice').digest('hex')}\ncredential = team\n`;
	await withWs({ onSocket: echo }, { config }, async ({ up, px }) => {
		await assert.rejects(open(wsUrl(px), { authorization: 'Bearer tok-mallory' }), (e) => e.status === 401);
		assert.equal(up.upgrades.length, 0, 'no upstream connection');
		const ws = await open(wsUrl(px), { authorization: 'Bearer tok-alice' });
		assert.equal(up.upgrades[0].headers.authorization, 'Bearer sk-up');
		ws.close();
	});
});

test('websocket = off, or an upgrade elsewhere: 426 at once', async () => {
	await withWs({ onSocket: echo }, { config: '[server]\nwebsocket = off\n' }, async ({ up, px }) => {
		await assert.rejects(open(wsUrl(px)), (e) => e.status === 426 && JSON.parse(e.body).error.code === 'websocket_not_supported');
		assert.equal(up.upgrades.length, 0);
	});
	await withWs({ onSocket: echo }, {}, async ({ up, px }) => {
		await assert.rejects(open(wsUrl(px, '/v1/chat/completions')), (e) => e.status === 426);
		assert.equal(up.upgrades.length, 0);
	});
});

test('a client that vanishes closes the upstream socket within 2 s', async () => {
	let upGone;
	const gone = new Promise((r) => { upGone = r; });
	await withWs({ onSocket: (s) => s.on('close', (code) => upGone(code)) }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		ws.terminate();		// no close frame: the TCP connection just ends
		const code = await h.within(gone, 2000, 'the upstream socket closed');
		assert.equal(code, 1001, 'going away');
	});
});

/* A self-signed certificate for 127.0.0.1 (openssl req), and its file. */
function selfSigned() {
	const { execFileSync } = require('node:child_process');
	const dir = h.tmpdir();
	const key = path.join(dir, 'key.pem');
	const cert = path.join(dir, 'cert.pem');
	execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
		'-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
	return { key: fs.readFileSync(key), cert: fs.readFileSync(cert), certFile: cert };
}

test('an https upstream: the WebSocket goes over TLS, its certificate checked', async () => {
	const tls = selfSigned();
	await withWs({ onSocket: echo, tls }, { env: { SSL_CERT_FILE: tls.certFile } }, async ({ up, px }) => {
		const ws = await open(wsUrl(px));
		ws.send('over tls');
		const [m] = await ws.next();
		assert.equal(m.data.toString(), 'over tls');
		assert.equal(up.upgrades.length, 1);
		ws.close();
	});
	// Not trusted: no WebSocket, a 502, and nothing reached the upstream's handler.
	await withWs({ onSocket: echo, tls: selfSigned() }, { env: { SSL_CERT_FILE: tls.certFile } }, async ({ up, px }) => {
		await assert.rejects(open(wsUrl(px)), (e) => e.status === 502);
		assert.equal(up.upgrades.length, 0);
	});
});

/* The API over WebSocket, as far as a turn goes: created, a delta, completed. */
function fakeApi(ws) {
	let n = 0;
	ws.on('message', (d) => {
		const m = JSON.parse(d.toString());
		if (m.type !== 'response.create') return;
		const id = `resp_ws${process.hrtime.bigint()}${n++}`;
		const resp = (status) => ({
			id, object: 'response', created_at: 1741386163, status, model: m.model || 'gpt-4o',
			output: status !== 'completed' ? [] : [{ type: 'message', id: `msg_${id.slice(5)}`, status: 'completed',
				role: 'assistant', content: [{ type: 'output_text', text: `answer to ${m.input}`, annotations: [] }] }],
			previous_response_id: m.previous_response_id || null, store: m.store !== false,
			error: null, incomplete_details: null, usage: null,
		});
		ws.send(JSON.stringify({ type: 'response.created', sequence_number: 0, response: resp('in_progress') }));
		ws.send(JSON.stringify({ type: 'response.output_text.delta', sequence_number: 1, item_id: `msg_${id.slice(5)}`,
			output_index: 0, content_index: 0, delta: 'answer' }));
		ws.send(JSON.stringify({ type: 'response.completed', sequence_number: 2, response: resp('completed') }));
	});
}

/* One turn: send a response.create, read events to the last; the events. */
async function turn(ws, body) {
	ws.send(JSON.stringify({ type: 'response.create', ...body }));
	const events = [];
	for (;;) {
		const [m] = await ws.next();
		const e = JSON.parse(m.data.toString());
		events.push(e);
		if (e.type === 'response.completed' || e.type === 'error') return events;
	}
}

test('a turn\'s completed response fills the cache: a later GET of its id is a hit', async () => {
	await withWs({ onSocket: fakeApi }, { keyFile: keyFile('sk-up') }, async ({ up, px }) => {
		const ws = await open(wsUrl(px));
		const events = await turn(ws, { model: 'gpt-4o', input: 'one' });
		assert.deepEqual(events.map((e) => e.type), ['response.created', 'response.output_text.delta', 'response.completed']);
		const id = events[2].response.id;
		const g = await h.until(async () => {
			const r = await h.request(`${px.url}/v1/responses/${id}`, { headers: { authorization: 'Bearer sk-client' } });
			return r.headers['x-cache'] === 'HIT' ? r : null;
		}, { what: 'the GET of the turn\'s id to be a hit' });
		assert.equal(g.json().id, id);
		assert.equal(g.json().status, 'completed');
		// A turn with store: false is not kept. The writer stores in order:
		// once the turn after it is a hit, the store: false one had its turn.
		const e2 = await turn(ws, { model: 'gpt-4o', input: 'two', store: false });
		const e3 = await turn(ws, { model: 'gpt-4o', input: 'three' });
		await h.until(async () => (await h.request(`${px.url}/v1/responses/${e3[2].response.id}`,
			{ headers: { authorization: 'Bearer sk-client' } })).headers['x-cache'] === 'HIT', { what: 'the third turn cached' });
		const r2 = await h.request(`${px.url}/v1/responses/${e2[2].response.id}`, { headers: { authorization: 'Bearer sk-client' } });
		assert.notEqual(r2.headers['x-cache'], 'HIT', 'store: false');
		ws.close();
		void up;
	});
});

test('another client\'s previous_response_id over WebSocket: an error event, nothing upstream', async () => {
	const crypto = require('node:crypto');
	const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
	const config = `[credential team]\nkey_file = ${keyFile('sk-up')}\n` +
		`[client alice]\ntoken_sha256 = ${sha('tok-alice')}\ncredential = team\n` +
		`[client anna]\ntoken_sha256 = ${sha('tok-anna')}\ncredential = team\n`;
	const seen = [];
	await withWs({ onSocket: (ws) => { ws.on('message', (d) => seen.push(d.toString())); fakeApi(ws); } }, { config }, async ({ px }) => {
		const alice = await open(wsUrl(px), { authorization: 'Bearer tok-alice' });
		const id = (await turn(alice, { model: 'gpt-4o', input: 'mine' }))[2].response.id;
		const anna = await open(wsUrl(px), { authorization: 'Bearer tok-anna' });
		const before = seen.length;
		const [err] = await turn(anna, { model: 'gpt-4o', input: 'go on', previous_response_id: id });
		assert.equal(err.type, 'error');
		assert.equal(err.error.code, 'previous_response_not_found');
		assert.match(err.error.message, new RegExp(id));
		assert.equal(seen.length, before, 'nothing of anna\'s turn reached the upstream');
		// Alice goes on from her own response.
		const next = await turn(alice, { model: 'gpt-4o', input: 'more', previous_response_id: id });
		assert.equal(next[2].type, 'response.completed');
		assert.equal(next[2].response.previous_response_id, id);
		alice.close();
		anna.close();
	});
});

test('SIGTERM closes open WebSockets with 1001 and the daemon exits 0', async () => {
	const up = await startWsUpstream({ onSocket: echo });
	const px = await h.startProxy({ upstream: up.url, config: '[server]\nshutdown_timeout = 2\n' });
	try {
		const ws = await open(wsUrl(px));
		ws.send('hello');
		await ws.next();
		const c = closed(ws);
		process.kill(px.pid, 'SIGTERM');
		assert.equal((await h.within(c, 10000, 'the close')).code, 1001);
		await px.exitsCleanly(15000, 'exit after SIGTERM with a WebSocket open');
	} finally {
		await up.close();
	}
});

test('a message over 16 MiB closes the socket with 1009', async () => {
	await withWs({ onSocket: echo }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		const c = closed(ws);
		ws.send(Buffer.alloc(16 * 1024 * 1024 + 1, 0x61));
		assert.equal((await h.within(c, 10000, 'the close')).code, 1009);
	});
});

test('an empty text message passes (wslay hands it over as NULL)', async () => {
	await withWs({ onSocket: echo }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		ws.send('');
		const [m] = await ws.next();
		assert.equal(m.data.length, 0);
		ws.close();
	});
});

test('fragmented messages pass whole', async () => {
	await withWs({ onSocket: echo }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		ws.send('part one, ', { fin: false });
		ws.send('part two', { fin: true });
		const [m] = await ws.next();
		assert.equal(m.data.toString(), 'part one, part two');
		ws.close();
	});
});

test('the official openai client\'s ResponsesWS (7.x), only baseURL changed: two chained turns, events as they come, then a cached retrieve', async () => {
	const { OpenAI } = require('openai7');
	const { ResponsesWS } = require('openai7/resources/responses/ws');
	/* The API, holding each turn's completed event until the client has its delta. */
	let deltaSeen = null;
	const api = (ws) => {
		let n = 0;
		ws.on('message', async (d) => {
			const m = JSON.parse(d.toString());
			if (m.type !== 'response.create') return;
			const id = `resp_sdk${process.hrtime.bigint()}${n++}`;
			const resp = (status) => ({
				id, object: 'response', created_at: 1741386163, status, model: m.model,
				output: status !== 'completed' ? [] : [{ type: 'message', id: `msg_${id.slice(5)}`, status: 'completed',
					role: 'assistant', content: [{ type: 'output_text', text: `answer to ${m.input}`, annotations: [] }] }],
				previous_response_id: m.previous_response_id || null, store: true,
				error: null, incomplete_details: null, usage: null,
			});
			const seen = new Promise((r) => { deltaSeen = r; });
			ws.send(JSON.stringify({ type: 'response.created', sequence_number: 0, response: resp('in_progress') }));
			ws.send(JSON.stringify({ type: 'response.output_text.delta', sequence_number: 1, item_id: `msg_${id.slice(5)}`,
				output_index: 0, content_index: 0, delta: 'answer' }));
			await seen;
			ws.send(JSON.stringify({ type: 'response.completed', sequence_number: 2, response: resp('completed') }));
		});
	};
	await withWs({ onSocket: api }, { keyFile: keyFile('sk-upstream-SDK') }, async ({ up, px }) => {
		const client = new OpenAI({ apiKey: 'sk-client-sdk', baseURL: `${px.url}/v1` });
		const rws = new ResponsesWS(client);
		const events = [];
		rws.on('event', (e) => {
			events.push(e);
			if (e.type === 'response.output_text.delta' && deltaSeen) deltaSeen();
		});
		rws.on('error', (e) => events.push({ type: 'client-error', message: String(e && e.message) }));
		const completed = (k) => h.until(() => events.filter((e) => e.type === 'response.completed').length >= k,
			{ timeoutMs: 10000, what: `completed turn ${k}` });
		rws.send({ type: 'response.create', model: 'gpt-4o', input: 'first' });
		await completed(1);
		const first = events.find((e) => e.type === 'response.completed').response;
		rws.send({ type: 'response.create', model: 'gpt-4o', input: 'second', previous_response_id: first.id });
		await completed(2);
		const second = events.filter((e) => e.type === 'response.completed')[1].response;
		assert.equal(second.previous_response_id, first.id);
		assert.deepEqual(events.map((e) => e.type), ['response.created', 'response.output_text.delta', 'response.completed',
			'response.created', 'response.output_text.delta', 'response.completed'], 'each turn\'s events, in order, as they came');
		rws.close();
		assert.equal(up.upgrades.length, 1, 'one WebSocket for both turns');
		assert.equal(up.upgrades[0].headers.authorization, 'Bearer sk-upstream-SDK');
		// The SDK's own HTTP retrieve: from the cache, nothing upstream.
		const got = await client.responses.retrieve(second.id);
		assert.equal(got.id, second.id);
		assert.equal(got.output_text, 'answer to second');
		assert.deepEqual(up.plain, [], 'no upstream GET');
	});
});

test('a client that stops reading: the upstream is no longer read, and the proxy\'s memory stays bounded', async (t) => {
	const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
	let upWs = null;
	const env = process.env.ASAN_OPTIONS ? { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS}:quarantine_size_mb=8` } : {};
	await withWs({ onSocket: (ws) => { upWs = ws; } }, { env }, async ({ px }) => {
		const ws = await open(wsUrl(px));
		await h.until(() => upWs !== null, { what: 'the upstream socket' });
		ws._socket.pause();		// the client reads nothing more
		const before = rss(px.pid);
		const chunk = Buffer.alloc(1024 * 1024, 0x62);
		const total = 200;
		for (let i = 0; i < total; i++) upWs.send(chunk, { binary: true });
		// The upstream's own buffer keeps what the proxy no longer reads.
		await h.until(() => upWs.bufferedAmount > 100 * 1024 * 1024, { timeoutMs: 20000, what: 'the upstream held back' });
		let peak = 0;
		for (let i = 0; i < 20; i++) {
			peak = Math.max(peak, rss(px.pid) - before);
			await h.delay(50);
		}
		t.diagnostic(`proxy RSS growth with a stalled client and 200 MB sent upstream: ${(peak / 1048576).toFixed(1)} MB; the upstream still holds ${(upWs.bufferedAmount / 1048576).toFixed(0)} MB`);
		assert.ok(peak < 64 * 1024 * 1024, `RSS grew by ${peak} bytes`);
		// Reading again, the client gets every message.
		let got = 0;
		ws.on('message', () => { got++; });
		ws._socket.resume();
		await h.until(() => got === total, { timeoutMs: 60000, what: `all ${total} messages` });
		ws.close();
	});
});

test('websocket_idle_timeout closes a socket silent both ways (1001), not one in use', async () => {
	let upClosed;
	const upClose = new Promise((r) => { upClosed = r; });
	await withWs({ onSocket: (s) => { echo(s); s.on('close', (code) => upClosed(code)); } },
		{ config: '[server]\nwebsocket_idle_timeout = 1\n' }, async ({ px }) => {
			const ws = await open(wsUrl(px));
			// In use for 2 s: a message every 300 ms keeps it open.
			const t0 = Date.now();
			const c = closed(ws);
			let last = 0;
			while (Date.now() - t0 < 2000) {
				ws.send('still here');
				await ws.next();
				last = Date.now();
				await h.delay(300);
			}
			assert.equal(ws.readyState, WebSocket.OPEN, 'open while in use');
			assert.deepEqual(await h.within(c, 5000, 'the idle close'), { code: 1001, reason: 'idle' });
			assert.ok(Date.now() - last >= 900, `closed ${Date.now() - last} ms after the last message`);
			assert.equal(await h.within(upClose, 5000, 'the upstream\'s idle close'), 1001);
		});
});

test('SIGTERM while an upstream handshake is pending: the client gets 503, the daemon exits 0', async () => {
	const net = require('node:net');
	const held = [];
	const silent = net.createServer((s) => { held.push(s); s.on('error', () => {}); });	// never answers
	await new Promise((r) => silent.listen(0, '127.0.0.1', r));
	const px = await h.startProxy({ upstream: `http://127.0.0.1:${silent.address().port}` });
	try {
		const p = open(wsUrl(px)).catch((e) => e);
		await h.until(() => held.length === 1, { what: 'the proxy\'s upstream handshake' });
		process.kill(px.pid, 'SIGTERM');
		const e = await p;
		assert.equal(e.status, 503, `the pending handshake's answer: ${e.status} ${e.message}`);
		await px.exitsCleanly(15000, 'exit after SIGTERM with a handshake pending');
	} finally {
		for (const s of held) s.destroy();
		silent.close();
	}
});

test('a quiet socket outlives client_timeout (only websocket_idle_timeout ends it)', async () => {
	await withWs({ onSocket: echo }, { config: '[server]\nclient_timeout = 1\n' }, async ({ px }) => {
		const ws = await open(wsUrl(px));
		let closedAt = null;
		ws.on('close', () => { closedAt = Date.now(); });
		const t0 = Date.now();
		await h.until(() => Date.now() - t0 > 2500 || closedAt !== null, { timeoutMs: 5000, what: '2.5 s of quiet' });
		assert.equal(closedAt, null, 'still open after 2.5 s of quiet, client_timeout 1 s');
		ws.send('after the quiet');
		const [m] = await ws.next();
		assert.equal(m.data.toString(), 'after the quiet');
		ws.close();
	});
});

test('a client that stalls, then vanishes: the upstream is closed all the same', async () => {
	let upWs = null;
	let upClosed;
	const upClose = new Promise((r) => { upClosed = r; });
	await withWs({ onSocket: (ws) => { upWs = ws; ws.on('close', (code) => upClosed(code)); } }, {}, async ({ px }) => {
		const ws = await open(wsUrl(px));
		await h.until(() => upWs !== null, { what: 'the upstream socket' });
		ws._socket.pause();
		const chunk = Buffer.alloc(1024 * 1024, 0x63);
		for (let i = 0; i < 20; i++) upWs.send(chunk, { binary: true });
		await h.until(() => upWs.bufferedAmount > 4 * 1024 * 1024, { timeoutMs: 20000, what: 'the proxy pausing the upstream' });
		ws._socket.destroy();		// gone, without a close
		assert.equal(await h.within(upClose, 10000, 'the upstream\'s close'), 1001);
		await h.until(async () => await h.metric(px, 'respcache_websockets_open') === 0, { what: 'the relay ended' });
	});
});

test('an upstream 101 split across writes, inside its Sec-WebSocket-Accept, is read whole', async () => {
	const net = require('node:net');
	const crypto = require('node:crypto');
	const server = net.createServer((s) => {
		let buf = '';
		s.on('data', (d) => {
			buf += d;
			const i = buf.indexOf('\r\n\r\n');
			if (i === -1 || s.answered) return;
			s.answered = true;
			const key = /sec-websocket-key: *(\S+)/i.exec(buf)[1];
			const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
			const head = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`;
			const cut = head.indexOf(accept) + 10;
			s.write(head.slice(0, cut));
			setTimeout(() => s.write(head.slice(cut)), 50);
		});
		s.on('error', () => {});
	});
	await new Promise((r) => server.listen(0, '127.0.0.1', r));
	const px = await h.startProxy({ upstream: `http://127.0.0.1:${server.address().port}` });
	try {
		const ws = await open(wsUrl(px));
		assert.equal(ws.readyState, WebSocket.OPEN, 'open: the Accept was checked whole');
		ws.terminate();
	} finally {
		await px.stop();
		server.close();
	}
});
