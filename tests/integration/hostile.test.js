'use strict';
// Hostile input on the request path: request smuggling, CR/LF/NUL in header
// values and queries, encoded path tricks in ids, oversized headers and
// bodies, slow clients, a broken upstream answer, attempts to override the
// credential's Authorization, and hop-by-hop headers.  Each test checks
// what a user would notice: the status and shape of the answer, whether the
// connection is closed, and what (if anything) reached the upstream.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const h = require('../lib/harness');

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* A socket to the proxy that records when it is closed. */
function openSocket(port) {
	const sock = net.connect(port, '127.0.0.1');
	const st = { sock, data: '', closedAt: null, t0: Date.now() };
	st.connected = new Promise((resolve, reject) => {
		sock.once('connect', resolve);
		sock.once('error', reject);
	});
	st.closed = new Promise((resolve) => {
		sock.on('close', () => { st.closedAt = Date.now(); resolve(); });
	});
	sock.on('data', (d) => { st.data += d.toString('latin1'); });
	sock.on('error', () => { /* close follows */ });
	return st;
}

/* A request head; lines are joined with CRLF, the blank line added. */
function head(port, method, target, lines = []) {
	return `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
		lines.map((l) => l + '\r\n').join('') + '\r\n';
}

function chunked(text) {
	const b = Buffer.from(text);
	return `${b.length.toString(16)}\r\n${text}\r\n0\r\n\r\n`;
}

/* Raw request heads and bodies for a create, so header tricks are byte-exact. */
const CREATE_BODY = JSON.stringify({ model: 'gpt-4o', input: 'hostile' });

function upSaw(up) {
	return up.requests.map((r) => `${r.method} ${r.url}`).join(', ') || 'nothing';
}

/*
 * Record what the upstream's HTTP parser threw away (a header it refused,
 * e.g. a bare CR) and every raw header list it accepted, so that "nothing
 * forwarded" also covers requests the fake could not parse.
 */
function watchUpstream(up) {
	const w = { clientErrors: [], raw: [] };
	up.server.on('clientError', (err, sock) => {
		w.clientErrors.push(`${err.code}: ${err.rawPacket ? JSON.stringify(err.rawPacket.toString('latin1').slice(0, 300)) : ''}`);
		sock.destroy();
	});
	const prev = up.override;
	up.override = (req, res, body) => {
		w.raw.push(req.rawHeaders);
		return prev ? prev(req, res, body) : false;
	};
	return w;
}

const SMUGGLE_PROBE = '/v1/responses/resp_smuggled_probe';

/* ------------------------------------------------------------------ */
/* Request smuggling                                                   */
/* ------------------------------------------------------------------ */

test('Content-Length and Transfer-Encoding: chunked together: 400, connection closed, nothing forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const w = watchUpstream(up);
		const body = chunked(CREATE_BODY);
		const second = head(px.port, 'GET', SMUGGLE_PROBE, ['Authorization: Bearer sk-test']);
		const variants = [
			['Content-Type: application/json', `Content-Length: ${body.length}`, 'Transfer-Encoding: chunked'],
			['Content-Type: application/json', 'Transfer-Encoding: chunked', `Content-Length: ${body.length}`],
			// CL.TE: a Content-Length that ends inside the chunked body.
			['Content-Type: application/json', 'Content-Length: 4', 'Transfer-Encoding: chunked'],
			['Content-Type: application/json', `Content-Length: ${body.length}`, 'Transfer-Encoding: Chunked'],
		];
		for (const v of variants) {
			const r = await h.exchange(px.port,
				head(px.port, 'POST', '/v1/responses', ['Authorization: Bearer sk-test', ...v]) + body + second);
			const what = v.slice(1).join(' + ');
			assert.ok(r.answers.length >= 1, `${what}: no answer; got ${JSON.stringify(r.raw.slice(0, 300))}`);
			h.assertOpenAIError(r.answers[0], 400, what);
			assert.equal(r.answers.length, 1, `${what}: the pipelined request was answered too: ${r.answers.map((a) => a.status).join(', ')}`);
			assert.ok(r.closed, `${what}: the connection stayed open`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
		assert.deepEqual(w.clientErrors, []);
	});
});

test('two Content-Length headers (equal or different): 400, nothing forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const n = CREATE_BODY.length;
		const second = head(px.port, 'GET', SMUGGLE_PROBE, ['Authorization: Bearer sk-test']);
		for (const [a, b] of [[n, n], [n, 4], [n, n + 40]]) {
			const r = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [
				'Authorization: Bearer sk-test', 'Content-Type: application/json',
				`Content-Length: ${a}`, `Content-Length: ${b}`,
			]) + CREATE_BODY + second);
			const what = `Content-Length: ${a} and ${b}`;
			assert.ok(r.answers.length >= 1, `${what}: no answer; got ${JSON.stringify(r.raw.slice(0, 300))}`);
			h.assertOpenAIError(r.answers[0], 400, what);
			assert.equal(r.answers.length, 1, `${what}: the pipelined request was answered too`);
		}
		// One header with a list value is the same thing.
		const r = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [
			'Authorization: Bearer sk-test', 'Content-Type: application/json', `Content-Length: ${n}, ${n}`,
		]) + CREATE_BODY);
		assert.ok(r.answers.length >= 1, `Content-Length: n, n: no answer`);
		h.assertOpenAIError(r.answers[0], 400, 'Content-Length: n, n');
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

test('a Transfer-Encoding other than plain chunked: 400 or 501, never forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const second = head(px.port, 'GET', SMUGGLE_PROBE, ['Authorization: Bearer sk-test']);
		for (const te of ['gzip, chunked', 'gzip', 'identity', 'chunked, identity', 'deflate']) {
			const r = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [
				'Authorization: Bearer sk-test', 'Content-Type: application/json', `Transfer-Encoding: ${te}`,
			]) + chunked(CREATE_BODY) + second);
			assert.ok(r.answers.length >= 1, `TE ${te}: no answer; got ${JSON.stringify(r.raw.slice(0, 300))}`);
			const a = r.answers[0];
			assert.ok(a.status === 400 || a.status === 501, `TE ${te}: status ${a.status}`);
			h.assertOpenAIError(a, null, `Transfer-Encoding: ${te}`);
			assert.equal(up.requests.length, 0, `TE ${te}: upstream saw: ${upSaw(up)}`);
		}
	});
});

/* ------------------------------------------------------------------ */
/* CR, LF, NUL                                                         */
/* ------------------------------------------------------------------ */

test('CR, LF or NUL inside a header value: 400, never forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const w = watchUpstream(up);
		const id = up.seed();
		const bad = [
			'User-Agent: abc\rdef',
			'User-Agent: abc\r def',
			'OpenAI-Beta: responses=v1\r\tAuthorization: Bearer evil',
			'X-Stainless-Lang: js\r X-Injected: 1',
			'User-Agent: abc\x00def',
			'X-Stainless-Lang: js\x00\x00evil',
			'User-Agent: abc\ndef',
			'User\x00-Agent: x',
			'X-Stainless-Os\r: Linux',
		];
		for (const line of bad) {
			const what = JSON.stringify(line);
			const before = up.requests.length;
			const errs = w.clientErrors.length;
			const c = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [
				'Authorization: Bearer sk-test', 'Content-Type: application/json',
				`Content-Length: ${CREATE_BODY.length}`, line,
			]) + CREATE_BODY);
			assert.ok(c.answers.length >= 1, `POST with ${what}: no answer; got ${JSON.stringify(c.raw.slice(0, 300))}`);
			h.assertOpenAIError(c.answers[0], 400, `POST with ${what}`);
			const g = await h.exchange(px.port, head(px.port, 'GET', `/v1/responses/${id}`, [
				'Authorization: Bearer sk-test', line, 'Connection: close',
			]));
			assert.ok(g.answers.length >= 1, `GET with ${what}: no answer`);
			h.assertOpenAIError(g.answers[0], 400, `GET with ${what}`);
			assert.equal(up.requests.length, before,
				`${what} was forwarded: ${up.requests.slice(before).map((r) => JSON.stringify(r.headers)).join(' | ')}`);
			assert.equal(w.clientErrors.length, errs, `${what} reached the upstream, which refused it: ${w.clientErrors.slice(errs).join(' | ')}`);
		}
	});
});

test('an obs-folded header value: 400 (RFC 9112 5.2), never forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const w = watchUpstream(up);
		const r = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [
			'Authorization: Bearer sk-test', 'Content-Type: application/json',
			`Content-Length: ${CREATE_BODY.length}`, 'User-Agent: abc\r\n def', 'Connection: close',
		]) + CREATE_BODY);
		assert.ok(r.answers.length >= 1, 'no answer');
		assert.deepEqual(w.clientErrors, [], 'the upstream refused what it was sent');
		h.assertOpenAIError(r.answers[0], 400, 'obs-fold');
		assert.equal(up.requests.length, 0);
	});
});

test('percent-encoded CR, LF or NUL in the query: 400, no upstream request (GET routes)', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		for (const q of ['x=%0d%0aX-Injected:%201', 'x=%0D', 'x=%0A', 'x=%00', 'include[]=a%00b', 'after=msg_1%0d%0a', '%0a=1']) {
			for (const p of [`/v1/responses/${id}`, `/v1/responses/${id}/input_items`]) {
				const r = await h.rawRequest(px.port, head(px.port, 'GET', `${p}?${q}`, ['Authorization: Bearer sk-test', 'Connection: close']));
				h.assertOpenAIError(r, 400, `GET ${p}?${q}`);
			}
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

test('percent-encoded CR, LF or NUL in the query: 400, no upstream request (POST and DELETE routes)', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ background: true });
		const body = ['Authorization: Bearer sk-test', 'Content-Type: application/json',
			`Content-Length: ${CREATE_BODY.length}`, 'Connection: close'];
		for (const q of ['x=%0d%0aX-Injected:%201', 'x=%00', 'x=%0A']) {
			const reqs = [
				['POST', '/v1/responses', body, CREATE_BODY],
				['POST', '/v1/responses/input_tokens', body, CREATE_BODY],
				['POST', `/v1/responses/${id}/cancel`, ['Authorization: Bearer sk-test', 'Content-Length: 0', 'Connection: close'], ''],
				['DELETE', `/v1/responses/${id}`, ['Authorization: Bearer sk-test', 'Connection: close'], ''],
			];
			for (const [m, p, lines, b] of reqs) {
				const r = await h.rawRequest(px.port, head(px.port, m, `${p}?${q}`, lines) + b);
				h.assertOpenAIError(r, 400, `${m} ${p}?${q}`);
			}
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

/* ------------------------------------------------------------------ */
/* Ids                                                                 */
/* ------------------------------------------------------------------ */

test('encoded slashes, dots, NULs and over-long ids in /v1/responses/{id}[/input_items|/cancel]: 400, not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const bad = ['resp%2Fx', 'resp%2fx', '%2F', '..', 'resp_..', '%2e%2e', '%2E%2E', 'resp_%2e%2e%2fx',
			'resp%00x', '%00', 'resp_%0d%0a', 'resp_%5c', 'r'.repeat(129), 'resp_' + 'a'.repeat(124)];
		for (const id of bad) {
			const short = id.length > 24 ? `${id.slice(0, 12)}...(${id.length})` : id;
			const auth = ['Authorization: Bearer sk-test', 'Connection: close'];
			const g = await h.rawRequest(px.port, head(px.port, 'GET', `/v1/responses/${id}`, auth));
			h.assertOpenAIError(g, 400, `GET /v1/responses/${short}`);
			const i = await h.rawRequest(px.port, head(px.port, 'GET', `/v1/responses/${id}/input_items`, auth));
			h.assertOpenAIError(i, 400, `GET /v1/responses/${short}/input_items`);
			const c = await h.rawRequest(px.port, head(px.port, 'POST', `/v1/responses/${id}/cancel`, [...auth, 'Content-Length: 0']));
			h.assertOpenAIError(c, 400, `POST /v1/responses/${short}/cancel`);
			const d = await h.rawRequest(px.port, head(px.port, 'DELETE', `/v1/responses/${id}`, auth));
			h.assertOpenAIError(d, 400, `DELETE /v1/responses/${short}`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

test('a 128-character id is accepted on all three routes', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = 'resp_' + 'A-z_9'.repeat(25).slice(0, 123);
		assert.equal(id.length, 128);
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 404, `GET: ${g.body}`);
		const i = await h.request(`${px.url}/v1/responses/${id}/input_items`);
		assert.equal(i.status, 404, `input_items: ${i.body}`);
		const c = await h.request(`${px.url}/v1/responses/${id}/cancel`, { method: 'POST', body: '' });
		assert.equal(c.status, 404, `cancel: ${c.body}`);
		assert.equal(up.count('GET', `/v1/responses/${id}`), 1);
		assert.equal(up.count('GET', `/v1/responses/${id}/input_items`), 1);
		assert.equal(up.count('POST', `/v1/responses/${id}/cancel`), 1);
	});
});

/* ------------------------------------------------------------------ */
/* Sizes                                                               */
/* ------------------------------------------------------------------ */

test('a header block over max_header_size (64k): 431 or 400 in the OpenAI shape, not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const cases = {
			'one 66 KB header': [`X-Stainless-Big: ${'a'.repeat(66 * 1024)}`],
			'2000 small headers': Array.from({ length: 2000 }, (_, i) => `X-Stainless-H${i}: ${'b'.repeat(30)}`),
		};
		for (const [what, lines] of Object.entries(cases)) {
			const r = await h.exchange(px.port, head(px.port, 'GET', `/v1/responses/${id}`, ['Authorization: Bearer sk-test', ...lines]), { waitMs: 5000 });
			assert.ok(r.answers.length >= 1, `${what}: no answer (closed: ${r.closed}); got ${JSON.stringify(r.raw.slice(0, 300))}`);
			const a = r.answers[0];
			assert.ok(a.status === 431 || a.status === 400, `${what}: status ${a.status}`);
			h.assertOpenAIError(a, null, what);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
		// A 60 KB header block is within the limit and served.
		const ok = await h.exchange(px.port, head(px.port, 'GET', `/v1/responses/${id}`,
			['Authorization: Bearer sk-test', `X-Filler: ${'c'.repeat(60 * 1024)}`, 'Connection: close']));
		assert.equal(ok.answers[0]?.status, 200, `60 KB of headers: ${ok.raw.slice(0, 200)}`);
	});
});

test('a body over max_body_size: 413 in the OpenAI shape, not forwarded (Content-Length, chunked, Expect)', async () => {
	await h.withStack({ proxy: { config: '[server]\nmax_body_size = 1024\n' } }, async ({ up, px }) => {
		const big = JSON.stringify({ model: 'gpt-4o', input: 'x'.repeat(4096) });
		const base = ['Authorization: Bearer sk-test', 'Content-Type: application/json'];
		const cl = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [...base, `Content-Length: ${big.length}`]) + big);
		assert.ok(cl.answers.length >= 1, `Content-Length: no answer; got ${JSON.stringify(cl.raw.slice(0, 300))}`);
		h.assertOpenAIError(cl.answers[0], 413, 'Content-Length body of 4 KB');
		const ch = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [...base, 'Transfer-Encoding: chunked']) + chunked(big));
		assert.ok(ch.answers.length >= 1, `chunked: no answer; got ${JSON.stringify(ch.raw.slice(0, 300))}`);
		h.assertOpenAIError(ch.answers[0], 413, 'chunked body of 4 KB');
		// Expect: 100-continue with a huge length: refused before any body is sent.
		const ex = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [...base, 'Content-Length: 10485760', 'Expect: 100-continue']));
		assert.ok(ex.answers.length >= 1, `Expect: no answer; got ${JSON.stringify(ex.raw.slice(0, 300))}`);
		h.assertOpenAIError(ex.answers[ex.answers.length - 1], 413, 'Expect: 100-continue with 10 MB');
		assert.ok(ex.ms < 2000, `the 413 to Expect took ${ex.ms} ms`);
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

test('a Content-Length that is negative, not a number, or overflows: 400/413, not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		for (const v of ['-1', 'abc', '12abc', '0x10', '99999999999999999999999']) {
			const r = await h.exchange(px.port, head(px.port, 'POST', '/v1/responses', [
				'Authorization: Bearer sk-test', 'Content-Type: application/json', `Content-Length: ${v}`,
			]) + CREATE_BODY);
			assert.ok(r.answers.length >= 1, `Content-Length: ${v}: no answer (closed: ${r.closed})`);
			const a = r.answers[0];
			assert.ok(a.status === 400 || a.status === 413, `Content-Length: ${v}: status ${a.status}`);
			h.assertOpenAIError(a, null, `Content-Length: ${v}`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

/* ------------------------------------------------------------------ */
/* Slow clients                                                        */
/* ------------------------------------------------------------------ */

test('slow-loris: a stalled half request is cut off, and others are served meanwhile', async (t) => {
	await h.withStack({ proxy: { config: '[server]\nclient_timeout = 1\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const warm = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(warm.status, 200);
		const partials = [
			'GET /v1/responses/resp_x HTT',
			`GET /v1/responses/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ab`,
			`POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"model":`,
		];
		const slow = [];
		for (let i = 0; i < 10; i++) {
			const s = openSocket(px.port);
			await s.connected;
			s.sock.write(partials[i % partials.length]);
			slow.push(s);
		}
		// While they stall, a GET (a cache hit) and a miss are served promptly.
		for (let i = 0; i < 3; i++) {
			const g = await h.request(`${px.url}/v1/responses/${id}`, { agent: false });
			assert.equal(g.status, 200);
			assert.ok(g.ms < 500, `a GET took ${g.ms} ms while 10 clients stalled`);
		}
		const m = await h.request(`${px.url}/v1/responses/${up.seed()}`, { agent: false });
		assert.equal(m.status, 200);
		assert.ok(m.ms < 500, `a miss took ${m.ms} ms while 10 clients stalled`);
		await h.within(Promise.all(slow.map((s) => s.closed)), 5000, 'the stalled clients to be cut off');
		const worst = Math.max(...slow.map((s) => s.closedAt - s.t0));
		t.diagnostic(`stalled clients cut after at most ${worst} ms (client_timeout = 1 s)`);
		assert.ok(worst < 5000, `cut after ${worst} ms`);
		for (const s of slow) {
			assert.doesNotMatch(s.data, /HTTP\/1\.1 200/, 'a stalled half request was not served');
		}
		assert.equal(up.count('POST', '/v1/responses'), 0, 'the half POST was not forwarded');
	});
});

test('slow-loris: a client dribbling one header byte every 300 ms is cut off within 5 s', async (t) => {
	await h.withStack({ proxy: { config: '[server]\nclient_timeout = 1\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const s = openSocket(px.port);
		await s.connected;
		s.sock.write(`GET /v1/responses/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: `);
		const timer = setInterval(() => {
			if (s.closedAt === null) s.sock.write('a');
		}, 300);
		const BOUND = 6000;
		try {
			// Meanwhile other clients are served.
			const g = await h.request(`${px.url}/v1/responses/${id}`, { agent: false });
			assert.equal(g.status, 200);
			assert.ok(g.ms < 500, `a GET took ${g.ms} ms while a client dribbled`);
			await h.within(s.closed, BOUND, 'the dribbling client to be cut off').catch(() => {});
		} finally {
			clearInterval(timer);
			s.sock.destroy();
		}
		const cut = s.closedAt !== null && s.closedAt - s.t0 <= BOUND ? s.closedAt - s.t0 : null;
		t.diagnostic(cut === null ? `dribbling client still connected after ${BOUND} ms` : `dribbling client cut after ${cut} ms`);
		assert.ok(cut !== null && cut < 5000, cut === null ? `not cut within ${BOUND} ms` : `cut after ${cut} ms`);
	});
});

/* ------------------------------------------------------------------ */
/* A broken upstream answer                                            */
/* ------------------------------------------------------------------ */

test('malformed JSON from the upstream on GET /v1/responses/{id}: passed through unchanged or 502, never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const bodies = {
			resp_trunc: '{"id":"resp_trunc","object":"response","status":"completed","output":[{"type":"mess',
			resp_garbage: 'not json at all <html>',
			resp_trailing: '{"id":"resp_trailing","object":"response","status":"completed"}}garbage',
			resp_nul: '{"id":"resp_nul","object":"response","status":"completed"}\u0000',
			resp_array: '[{"id":"resp_array","status":"completed"}]',
		};
		up.override = (req, res) => {
			const m = /^\/v1\/responses\/(resp_[a-z]+)(\/input_items)?$/.exec(req.url.split('?')[0]);
			if (!m || !(m[1] in bodies)) return false;
			const b = Buffer.from(bodies[m[1]]);
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(b.length), 'x-request-id': 'req_bad' });
			res.end(b);
			return true;
		};
		for (const [id, text] of Object.entries(bodies)) {
			for (const suffix of ['', '/input_items']) {
				const p = `/v1/responses/${id}${suffix}`;
				for (let n = 1; n <= 2; n++) {
					const r = await h.request(px.url + p);
					if (r.status === 200) {
						assert.equal(r.body, text, `${p} #${n}: the body was altered`);
					} else {
						h.assertOpenAIError(r, 502, `${p} #${n}`);
					}
					assert.notEqual(r.headers['x-cache'], 'HIT', `${p} #${n} was served from the cache`);
				}
				assert.equal(up.count('GET', p), 2, `${p}: the second GET did not reach the upstream`);
			}
		}
	});
});

test('an upstream answer cut short (Content-Length not reached): 502, never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		let cut = true;
		up.override = (req, res) => {
			if (!cut || req.url.split('?')[0] !== `/v1/responses/${id}`) return false;
			const part = `{"id":"${id}","object":"response","status":"completed","output":[`;
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': '5000' });
			res.write(part);
			setImmediate(() => res.socket.destroy());
			return true;
		};
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		h.assertOpenAIError(r, 502, 'truncated upstream body');
		cut = false;
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200);
		h.assertXCache(g, 'MISS', 'the GET after a truncated answer');
		assert.equal(up.count('GET', `/v1/responses/${id}`), 2);
	});
});

/* ------------------------------------------------------------------ */
/* Credentials                                                         */
/* ------------------------------------------------------------------ */

function keyFile(key = 'sk-real-upstream') {
	const f = path.join(h.tmpdir(), 'upstream.key');
	fs.writeFileSync(f, `${key}\n`, { mode: 0o600 });
	return f;
}

test("no client header can override the credential's Authorization", async () => {
	await h.withStack({ upstream: { requireKey: 'sk-real-upstream' }, proxy: { keyFile: keyFile() } }, async ({ up, px }) => {
		const w = watchUpstream(up);
		const n = CREATE_BODY.length;
		const variants = {
			'own Authorization': ['Authorization: Bearer client-a1'],
			'two Authorization headers': ['Authorization: Bearer client-b1', 'Authorization: Bearer client-b2'],
			'odd casing': ['aUtHoRiZaTiOn: Bearer client-c1'],
			'upper case only': ['AUTHORIZATION: Bearer client-d1'],
			'no client Authorization, Proxy-Authorization': ['Proxy-Authorization: Bearer client-e1'],
			'Basic scheme': ['Authorization: Basic Y2xpZW50LWY6eA=='],
			'an empty Authorization then a real one': ['Authorization:', 'Authorization: Bearer client-i1'],
			'Azure-style api-key headers': ['api-key: client-j1', 'X-Api-Key: client-j2'],
		};
		for (const [what, lines] of Object.entries(variants)) {
			const before = w.raw.length;
			const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
				...lines, 'Content-Type: application/json', `Content-Length: ${n}`, 'Connection: close',
			]) + CREATE_BODY);
			assert.equal(r.status, 200, `${what}: ${r.status} ${r.body.slice(0, 200)}`);
			assert.equal(w.raw.length, before + 1, `${what}: not forwarded once`);
			const raw = w.raw[before];
			const auth = [];
			for (let i = 0; i < raw.length; i += 2) {
				if (/^(proxy-)?authorization$/i.test(raw[i])) auth.push(`${raw[i]}: ${raw[i + 1]}`);
			}
			assert.deepEqual(auth, ['Authorization: Bearer sk-real-upstream'], `${what}: upstream authorization headers`);
			assert.ok(!raw.join('\n').includes('client-'), `${what}: a client credential reached the upstream: ${JSON.stringify(raw)}`);
		}
		// Header lines that break the syntax are refused outright (RFC 9112 5.1, 5.2).
		const refused = {
			'space before the colon': ['Authorization : Bearer client-g1'],
			'obs-fold continuation': ['Authorization: Bearer client-h1', ' client-h2'],
		};
		for (const [what, lines] of Object.entries(refused)) {
			const before = w.raw.length;
			const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
				...lines, 'Content-Type: application/json', `Content-Length: ${n}`, 'Connection: close',
			]) + CREATE_BODY);
			h.assertOpenAIError(r, 400, what);
			assert.equal(w.raw.length, before, `${what}: forwarded`);
		}
		// The same on the other routes.
		const id = up.seed();
		for (const [m, p] of [['GET', `/v1/responses/${id}`], ['GET', `/v1/responses/${id}/input_items`],
			['POST', `/v1/responses/${id}/cancel`], ['DELETE', `/v1/responses/${id}`]]) {
			const before = w.raw.length;
			await h.rawRequest(px.port, head(px.port, m, p, [
				'Authorization: Bearer client-k1', 'aUTHORIZATION: Bearer client-k2', 'Proxy-Authorization: Bearer client-k3',
				...(m === 'POST' ? ['Content-Length: 0'] : []), 'Connection: close',
			]));
			assert.equal(w.raw.length, before + 1, `${m} ${p}: not forwarded once`);
			const raw = w.raw[before];
			assert.ok(!raw.join('\n').includes('client-'), `${m} ${p}: a client credential reached the upstream: ${JSON.stringify(raw)}`);
			assert.equal(up.requests[up.requests.length - 1].headers.authorization, 'Bearer sk-real-upstream', `${m} ${p}`);
		}
		assert.deepEqual(w.clientErrors, []);
	});
});

test("a chunked request's trailer cannot add Authorization or other forwarded headers", async () => {
	await h.withStack({ upstream: { requireKey: 'sk-real-upstream' }, proxy: { keyFile: keyFile() } }, async ({ up, px }) => {
		const w = watchUpstream(up);
		const b = Buffer.from(CREATE_BODY);
		const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
			'Content-Type: application/json', 'Transfer-Encoding: chunked', 'Connection: close',
		]) + `${b.length.toString(16)}\r\n${CREATE_BODY}\r\n0\r\n` +
			'Authorization: Bearer client-trailer\r\nOpenAI-Organization: org-trailer\r\nX-Stainless-Trail: trailer\r\n\r\n');
		assert.equal(r.status, 200, r.body);
		const raw = w.raw[0];
		assert.ok(raw, 'not forwarded');
		const flat = raw.join('\n');
		assert.ok(!flat.includes('client-trailer'), `trailer Authorization forwarded: ${JSON.stringify(raw)}`);
		assert.ok(!flat.includes('org-trailer'), `trailer OpenAI-Organization forwarded: ${JSON.stringify(raw)}`);
		assert.ok(!flat.includes('X-Stainless-Trail') && !/x-stainless-trail/i.test(flat), `trailer X-Stainless-Trail forwarded: ${JSON.stringify(raw)}`);
	});
});

test("OpenAI-Organization / OpenAI-Project: when no credential sets them, the client's are forwarded", async () => {
	const hdrs = { 'openai-organization': 'org-client', 'openai-project': 'proj_client' };
	for (const proxy of [{}, { keyFile: keyFile() }]) {
		await h.withStack({ proxy }, async ({ up, px }) => {
			const mode = proxy.keyFile ? 'key file without organization/project' : 'pass-through';
			const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: hdrs, body: { model: 'gpt-4o', input: 'org' } });
			assert.equal(c.status, 200, c.body);
			const id = c.json().id;
			const g = await h.request(`${px.url}/v1/responses/${id}?include[]=x`, { headers: hdrs });
			assert.equal(g.status, 200, g.body);
			for (const r of up.requests) {
				assert.equal(r.headers['openai-organization'], 'org-client', `${mode}: ${r.method} ${r.url}`);
				assert.equal(r.headers['openai-project'], 'proj_client', `${mode}: ${r.method} ${r.url}`);
			}
		});
	}
});

test("a credential's organization/project override the client's", async () => {
	const kf = keyFile('sk-cred');
	const config = `[credential default]\nkey_file = ${kf}\norganization = org-cred\nproject = proj_cred\n`;
	await h.withStack({ upstream: { requireKey: 'sk-cred' }, proxy: { config } }, async ({ up, px }) => {
		const c = await h.request(`${px.url}/v1/responses`, {
			method: 'POST',
			headers: { 'openai-organization': 'org-client', 'OpenAI-Project': 'proj_client' },
			body: { model: 'gpt-4o', input: 'org' },
		});
		assert.equal(c.status, 200, c.body);
		const u = up.requests[0];
		assert.equal(u.headers['openai-organization'], 'org-cred');
		assert.equal(u.headers['openai-project'], 'proj_cred');
		assert.ok(!JSON.stringify(u.headers).includes('client'), `client values reached the upstream: ${JSON.stringify(u.headers)}`);
	});
});

/* ------------------------------------------------------------------ */
/* Hop-by-hop headers                                                  */
/* ------------------------------------------------------------------ */

test('hop-by-hop headers from the client never reach the upstream', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const w = watchUpstream(up);
		const hop = [
			'Connection: keep-alive', 'Keep-Alive: timeout=5, max=100', 'TE: trailers, deflate',
			'Trailer: X-Stainless-Trail', 'Proxy-Authorization: Basic Zm9vOmJhcg==',
			'Proxy-Connection: keep-alive', 'Proxy-Foo: bar',
		];
		// A chunked body: Transfer-Encoding must not be forwarded either.
		const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
			'Authorization: Bearer sk-test', 'Content-Type: application/json', 'Transfer-Encoding: chunked', ...hop,
		]) + chunked(CREATE_BODY));
		assert.equal(r.status, 200, r.body);
		// The same headers on a GET, with Content-Length framing.
		const id = JSON.parse(r.body).id;
		const g = await h.rawRequest(px.port, head(px.port, 'GET', `/v1/responses/${id}?include[]=x`, ['Authorization: Bearer sk-test', ...hop]));
		assert.equal(g.status, 200, g.body);
		assert.equal(up.requests.length, 2, `upstream saw: ${upSaw(up)}`);
		assert.deepEqual(JSON.parse(up.requests[0].body), JSON.parse(CREATE_BODY), 'the de-chunked body arrived intact');
		for (const [i, u] of up.requests.entries()) {
			const what = `${u.method} ${u.url}`;
			for (const name of ['keep-alive', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-connection', 'proxy-foo']) {
				assert.equal(u.headers[name], undefined, `${what}: ${name} reached the upstream`);
			}
			assert.ok(!/chunked/i.test(u.headers['transfer-encoding'] || '') || i === 0 && u.headers['content-length'] === undefined,
				`${what}: transfer-encoding ${u.headers['transfer-encoding']}`);
			assert.doesNotMatch(u.headers.connection || '', /keep-alive.*timeout|trailer|proxy/i);
			assert.ok(!w.raw[i].join('\n').includes('Zm9vOmJhcg'), `${what}: Proxy-Authorization value forwarded`);
		}
	});
});

test('an Upgrade header on a non-WebSocket route never reaches the upstream', async (t) => {
	await h.withStack({}, async ({ up, px }) => {
		for (const [upg, conn] of [['h2c', 'Upgrade, HTTP2-Settings'], ['TLS/1.2', 'Upgrade'], ['foo', 'keep-alive']]) {
			const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
				'Authorization: Bearer sk-test', 'Content-Type: application/json', `Content-Length: ${CREATE_BODY.length}`,
				`Upgrade: ${upg}`, `Connection: ${conn}`, 'HTTP2-Settings: AAMAAABkAAQAAP__',
			]) + CREATE_BODY);
			t.diagnostic(`POST /v1/responses with Upgrade: ${upg} -> ${r.status}`);
			assert.ok(r.status === 200 || (r.status >= 400 && r.status < 500), `Upgrade: ${upg}: status ${r.status}`);
			if (r.status !== 200) h.assertOpenAIError(r, null, `Upgrade: ${upg}`);
			assert.notEqual(r.status, 101, 'no protocol switch');
		}
		for (const u of up.requests) {
			assert.equal(u.headers.upgrade, undefined, `${u.method} ${u.url}: upgrade forwarded`);
			assert.equal(u.headers['http2-settings'], undefined, `${u.method} ${u.url}: HTTP2-Settings forwarded`);
		}
	});
});

test('headers named in the client\'s Connection header are hop-by-hop: not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
			'Authorization: Bearer sk-test', 'Content-Type: application/json', `Content-Length: ${CREATE_BODY.length}`,
			'Connection: keep-alive, X-Stainless-Hop, OpenAI-Beta', 'X-Stainless-Hop: 1', 'OpenAI-Beta: hop',
		]) + CREATE_BODY);
		assert.equal(r.status, 200, r.body);
		const u = up.requests[0];
		assert.equal(u.headers['x-stainless-hop'], undefined, 'X-Stainless-Hop (named in Connection) reached the upstream');
		assert.equal(u.headers['openai-beta'], undefined, 'OpenAI-Beta (named in Connection) reached the upstream');
	});
});

/* ------------------------------------------------------------------ */
/* The guard's state is per connection                                 */
/* ------------------------------------------------------------------ */

test('a connection never inherits what a closed one on the same descriptor left', async () => {
	await h.withStack({ proxy: { config: '[server]\nclient_timeout = 1\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const get = head(px.port, 'GET', `/v1/responses/${id}`, ['Authorization: Bearer sk-test']);
		for (let i = 0; i < 10; i++) {
			// A client gets its answer, then sends a NUL and leaves...
			const s = openSocket(px.port);
			await s.connected;
			s.sock.write(get);
			await h.until(() => s.data.includes('\r\n\r\n'), { what: 'the answer' });
			s.sock.end('\0');
			await s.closed;
			// ...and the next client, likely on the same descriptor, is served.
			const r = await h.request(`${px.url}/v1/responses/${id}`, { agent: false });
			assert.equal(r.status, 200, `round ${i + 1}: ${r.status} ${r.body.slice(0, 200)}`);
		}
		// A client that leaves half-way through its headers...
		const s = openSocket(px.port);
		await s.connected;
		s.sock.write('GET /v1/resp');
		s.sock.destroy();
		await s.closed;
		await h.delay(1200);	/* longer than client_timeout: what is measured */
		// ...leaves no deadline behind: a request sent in two pieces is served.
		const n = openSocket(px.port);
		await n.connected;
		n.sock.write(get.slice(0, 20));
		await h.delay(50);
		n.sock.write(get.slice(20));
		await h.until(() => /^HTTP\/1\.1 \d{3}/.test(n.data) || n.closedAt !== null, { what: 'an answer' });
		assert.match(n.data, /^HTTP\/1\.1 200/);
		n.sock.destroy();
	});
});

test('a NUL in a pipelined second request fails that request, not the first', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const get = head(px.port, 'GET', `/v1/responses/${id}`, ['Authorization: Bearer sk-test']);
		const r = await h.exchange(px.port, get + head(px.port, 'GET', `/v1/responses/${id}`, ['Authorization: Bearer sk-test', 'X-Note: a\0b']));
		assert.ok(r.answers.length >= 1, JSON.stringify(r.raw.slice(0, 300)));
		assert.equal(r.answers[0].status, 200, 'the first request is served');
		if (r.answers.length > 1) h.assertOpenAIError(r.answers[1], 400, 'the second, with the NUL');
	});
});
