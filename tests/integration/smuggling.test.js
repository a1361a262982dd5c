'use strict';
// The request front, against smuggling: a request head that breaks HTTP/1.1's
// syntax (a space before a colon or inside a name, a signed or listed
// Content-Length, a Transfer-Encoding other than chunked alone, obs-fold, a
// bare CR, no Host or two, a request line with a raw space) is answered 400
// in the OpenAI error shape, the connection is closed, and whatever came
// after it on that connection (here, always a second request) never runs:
// the mock upstream sees nothing.  A raw space in a query is the client's
// 400, never a 502 blamed on the upstream.  Normal requests (SDK-like heads,
// keep-alive, pipelining, bare-LF lines, HTTP/1.0) are still served.  And
// unknown query parameters cannot mint cache keys: such GETs are forwarded
// byte for byte and never stored.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

const PROBE = '/v1/responses/resp_smuggled_probe';

/* A request after the bad one: it must never reach the upstream. */
function smuggled(port) {
	return `GET ${PROBE} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer sk-test\r\n\r\n`;
}

function upSaw(up) {
	return up.requests.map((r) => `${r.method} ${r.url}`).join(', ') || 'nothing';
}

/* Refused: one 400 in the OpenAI shape, the connection closed, nothing run. */
function assertRefused(r, up, what) {
	assert.ok(r.answers.length >= 1, `${what}: no answer (closed: ${r.closed}); got ${JSON.stringify(r.raw.slice(0, 300))}`);
	const j = h.assertOpenAIError(r.answers[0], 400, what);
	assert.equal(j.error.code, 'bad_request', `${what}: code`);
	assert.equal(r.answers[0].headers.connection, 'close', `${what}: the answer does not say Connection: close`);
	assert.equal(r.answers.length, 1, `${what}: the request after it was answered too: ${r.answers.map((a) => a.status).join(', ')}`);
	assert.ok(r.closed, `${what}: the connection stayed open`);
	assert.equal(up.requests.length, 0, `${what}: upstream saw: ${upSaw(up)}`);
	return j;
}

const CREATE_BODY = JSON.stringify({ model: 'gpt-4o', input: 'smuggling' });

/*
 * Each form: the head lines after the request line (Host included where
 * the form wants it), and the bytes that follow the head.  A lax reader
 * (evhttp alone) would run the smuggled request in each.
 */
function forms(port) {
	const s = smuggled(port);
	const host = `Host: 127.0.0.1:${port}`;
	const auth = 'Authorization: Bearer sk-test';
	const json = 'Content-Type: application/json';
	const post = (lines, tail) => `POST /v1/responses HTTP/1.1\r\n${[host, auth, json, ...lines].join('\r\n')}\r\n\r\n${tail}`;
	const get = (lines, version = '1.1') => `GET /v1/responses/resp_x HTTP/${version}\r\n${[auth, ...lines].join('\r\n')}\r\n\r\n${s}`;
	return {
		'Content-Length : N (space before the colon)': post([`Content-Length : ${s.length}`], s),
		'Transfer-Encoding : chunked (space before the colon)': post(['Transfer-Encoding : chunked'], s),
		'Content-Length<TAB>: N': post([`Content-Length\t: ${s.length}`], s),
		'Content-Length: +N': post([`Content-Length: +${s.length}`], s),
		'Content-Length: +0': post(['Content-Length: +0'], s),
		'Content-Length: N, N': post([`Content-Length: ${s.length}, ${s.length}`], s),
		'Content-Length: 0 then Content-Length: N': post(['Content-Length: 0', `Content-Length: ${s.length}`], s),
		'Content-Length: N then Transfer-Encoding: chunked': post([`Content-Length: ${s.length + 5}`, 'Transfer-Encoding: chunked'], `0\r\n\r\n${s}`),
		'Transfer-Encoding: chunked twice': post(['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], `0\r\n\r\n${s}`),
		'Transfer-Encoding: identity': post(['Transfer-Encoding: identity'], s),
		'a space inside a header name (Content Length)': post([`Content Length: ${s.length}`], s),
		'a space inside a header name (X Note)': post(['X Note: 1', 'Content-Length: 0'], s),
		'obs-fold hiding a Content-Length': post(['X-Note: a', ` Content-Length: ${s.length}`], s),
		'a bare CR in a value': post(['X-Note: a\rContent-Length: 0'], s),
		'no Host on HTTP/1.1': get([]),
		'two Host headers': get([host, 'Host: evil.example']),
		'two Host headers on HTTP/1.0': get([host, host], '1.0'),
		'Transfer-Encoding: chunked on HTTP/1.0': `POST /v1/responses HTTP/1.0\r\n${auth}\r\n${json}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${s}`,
		'two spaces in the request line': `GET  /v1/responses/resp_x HTTP/1.1\r\n${host}\r\n${auth}\r\n\r\n${s}`,
		'a raw space in the target': `GET /v1/responses/resp_x?a=b c HTTP/1.1\r\n${host}\r\n${auth}\r\n\r\n${s}`,
		'a non-ASCII byte in the target': `GET /v1/responses/resp_x?a=\xe9 HTTP/1.1\r\n${host}\r\n${auth}\r\n\r\n${s}`,
	};
}

/* ------------------------------------------------------------------ */
/* Smuggling                                                           */
/* ------------------------------------------------------------------ */

test('each smuggling form: 400 in the OpenAI shape, connection closed, the request after it never runs', async () => {
	await h.withStack({}, async ({ up, px }) => {
		// Every form is tried, and every failure named at once.
		const failed = [];
		for (const [what, bytes] of Object.entries(forms(px.port))) {
			const r = await h.exchange(px.port, bytes);
			try {
				assertRefused(r, up, what);
			} catch (e) {
				failed.push(e.message.split('\n')[0]);
			}
			up.requests.length = 0;
		}
		assert.deepEqual(failed, []);
		// The proxy still serves the next client.
		const id = up.seed();
		const ok = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(ok.status, 200, ok.body);
	});
});

test('the guard says why: its cause is the 400\'s message', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const f = forms(px.port);
		const cases = [
			['Content-Length : N (space before the colon)', /field name/],
			['Content-Length: +N', /Content-Length/],
			['obs-fold hiding a Content-Length', /folding/],
			['no Host on HTTP/1.1', /Host/],
			['two Host headers', /Host/],
			['Transfer-Encoding: identity', /Transfer-Encoding/],
		];
		for (const [what, re] of cases) {
			const r = await h.exchange(px.port, f[what]);
			const j = assertRefused(r, up, what);
			assert.match(j.error.message, re, `${what}: message`);
		}
	});
});

test('the smuggling forms split across reads, at the tricky bytes: refused alike', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const f = forms(px.port);
		const splits = {
			// Cut before the space, and between the space and the colon.
			'Content-Length : N (space before the colon)': ['Content-Length', ' ', ':'],
			'Transfer-Encoding : chunked (space before the colon)': ['Transfer-Enc', 'oding ', ': chunked'],
			'Content-Length: +N': ['Content-Length: ', '+'],
			// Cut between the CR and what follows it.
			'a bare CR in a value': ['X-Note: a\r', 'Content'],
			// Cut at the start of the folded line.
			'obs-fold hiding a Content-Length': ['X-Note: a\r\n', ' Content'],
			'two Host headers': ['Host: evil', '.example\r\n', '\r\n'],
		};
		for (const [what, marks] of Object.entries(splits)) {
			const bytes = f[what];
			const pieces = [];
			let at = 0;
			for (const m of marks) {
				const i = bytes.indexOf(m, at);
				assert.ok(i >= 0, `${what}: no ${JSON.stringify(m)}`);
				pieces.push(bytes.slice(at, i + m.length));
				at = i + m.length;
			}
			pieces.push(bytes.slice(at));
			const r = await h.exchange(px.port, pieces);
			assertRefused(r, up, `${what}, in ${pieces.length} pieces`);
		}
	});
});

test('a bad request pipelined after a good one: the good one is served, then 400 and close', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const good = `GET /v1/responses/${id} HTTP/1.1\r\nHost: 127.0.0.1:${px.port}\r\nAuthorization: Bearer sk-test\r\n\r\n`;
		const bad = `POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:${px.port}\r\nContent-Length : ${smuggled(px.port).length}\r\n\r\n${smuggled(px.port)}`;
		const r = await h.exchange(px.port, good + bad);
		assert.equal(r.answers.length, 2, `answers: ${JSON.stringify(r.raw.slice(0, 400))}`);
		assert.equal(r.answers[0].status, 200, 'the first request is served');
		h.assertOpenAIError(r.answers[1], 400, 'the second, with the bad head');
		assert.ok(r.closed, 'the connection stayed open');
		assert.equal(up.count('GET', PROBE), 0, `upstream saw: ${upSaw(up)}`);
		assert.equal(up.requests.length, 1, `upstream saw: ${upSaw(up)}`);
	});
});

/* ------------------------------------------------------------------ */
/* A raw space in the query                                            */
/* ------------------------------------------------------------------ */

function protocolErrors(px) {
	return h.metric(px, 'respcache_upstream_errors_total', '{kind="protocol"}');
}

test('a raw space in the query: 400 from the proxy, not a 502 blamed on the upstream', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const before = await protocolErrors(px);
		const host = `Host: 127.0.0.1:${px.port}`;
		const targets = [
			`/v1/responses/${id}?include[]=a b`,
			`/v1/responses/${id}?a= `,
			`/v1/responses/${id}/input_items?order=asc limit=2`,
			`/v1/responses/${id}?x=\t1`,
		];
		for (const t of targets) {
			for (const m of ['GET', 'DELETE']) {
				const r = await h.exchange(px.port, `${m} ${t} HTTP/1.1\r\n${host}\r\nAuthorization: Bearer sk-test\r\n\r\n`);
				assertRefused(r, up, `${m} ${JSON.stringify(t)}`);
			}
		}
		const c = await h.exchange(px.port, `POST /v1/responses?a=b c HTTP/1.1\r\n${host}\r\nAuthorization: Bearer sk-test\r\n` +
			`Content-Type: application/json\r\nContent-Length: ${CREATE_BODY.length}\r\n\r\n${CREATE_BODY}`);
		assertRefused(c, up, 'POST with a raw space in the query');
		assert.equal(await protocolErrors(px), before, 'an upstream protocol error was counted');
		// The same query percent-encoded is a request like any other.
		const enc = await h.request(`${px.url}/v1/responses/${id}?include[]=a%20b`);
		assert.equal(enc.status, 200, enc.body);
		assert.equal(up.requests.length, 1);
		assert.equal(up.requests[0].url, `/v1/responses/${id}?include[]=a%20b`);
	});
});

/* ------------------------------------------------------------------ */
/* Normal requests still work                                          */
/* ------------------------------------------------------------------ */

/* The head the OpenAI Python SDK sends, byte for byte but for the key. */
function sdkHead(port, method, target, extra = []) {
	return [
		`${method} ${target} HTTP/1.1`,
		`Host: 127.0.0.1:${port}`,
		'Accept-Encoding: gzip, deflate',
		'Connection: keep-alive',
		'Accept: application/json',
		'Content-Type: application/json',
		'User-Agent: OpenAI/Python 1.99.9',
		'X-Stainless-Lang: python',
		'X-Stainless-Package-Version: 1.99.9',
		'X-Stainless-OS: Linux',
		'X-Stainless-Arch: x64',
		'X-Stainless-Runtime: CPython',
		'X-Stainless-Runtime-Version: 3.11.2',
		'Authorization: Bearer sk-test',
		'X-Stainless-Async: false',
		'x-stainless-retry-count: 0',
		'x-stainless-read-timeout: 600',
		...extra,
	].join('\r\n') + '\r\n\r\n';
}

test('SDK-like requests, keep-alive and pipelined: all served, the connection kept', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		// One at a time on one connection.
		const create = sdkHead(px.port, 'POST', '/v1/responses', [`Content-Length: ${CREATE_BODY.length}`]) + CREATE_BODY;
		const r1 = await h.exchange(px.port, create, { want: 1 });
		assert.equal(r1.answers[0]?.status, 200, JSON.stringify(r1.raw.slice(0, 300)));
		assert.ok(!r1.closed, 'a good request closed its connection');
		// Pipelined in one write: a create, two GETs (the second a hit), a chunked create.
		const get = sdkHead(px.port, 'GET', `/v1/responses/${id}?include[]=message.output_text.logprobs`);
		const chunked = sdkHead(px.port, 'POST', '/v1/responses', ['Transfer-Encoding: chunked']) +
			`${CREATE_BODY.length.toString(16)}\r\n${CREATE_BODY}\r\n0\r\n\r\n`;
		const r2 = await h.exchange(px.port, create + get + get + chunked, { want: 4 });
		assert.deepEqual(r2.answers.map((a) => a.status), [200, 200, 200, 200], JSON.stringify(r2.raw.slice(0, 300)));
		assert.deepEqual(r2.answers.slice(1, 3).map((a) => a.headers['x-cache']), ['MISS', 'HIT']);
		assert.ok(!r2.closed, 'pipelined good requests closed the connection');
		// The same pipeline byte by byte... in three reads, cut inside heads.
		const all = create + get + chunked;
		const r3 = await h.exchange(px.port, [all.slice(0, 37), all.slice(37, create.length + 50), all.slice(create.length + 50)], { want: 3 });
		assert.deepEqual(r3.answers.map((a) => a.status), [200, 200, 200], JSON.stringify(r3.raw.slice(0, 300)));
		assert.equal(up.count('POST', '/v1/responses'), 5);
		assert.equal(up.count('GET', `/v1/responses/${id}`), 1, 'the GETs after the first were hits');
		// And through node's own client, keep-alive.
		for (let i = 0; i < 3; i++) {
			const r = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(r.status, 200);
		}
	});
});

test('bare-LF lines, HTTP/1.0 without Host, odd but valid spacing: served', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const lf = await h.exchange(px.port, `GET /v1/responses/${id} HTTP/1.1\nHost: x\nAuthorization: Bearer sk-test\n\n`, { want: 1 });
		assert.equal(lf.answers[0]?.status, 200, JSON.stringify(lf.raw.slice(0, 300)));
		const h10 = await h.exchange(px.port, `GET /v1/responses/${id} HTTP/1.0\r\nAuthorization: Bearer sk-test\r\n\r\n`, { want: 1 });
		assert.equal(h10.answers[0]?.status, 200, JSON.stringify(h10.raw.slice(0, 300)));
		const ows = await h.exchange(px.port, `POST /v1/responses HTTP/1.1\r\nhost:127.0.0.1\r\nAuthorization:\tBearer sk-test \r\n` +
			`content-length:  ${CREATE_BODY.length}\t\r\nX-Empty:\r\nUser-Agent: caf\xc3\xa9\r\n\r\n${CREATE_BODY}`, { want: 1 });
		assert.equal(ows.answers[0]?.status, 200, JSON.stringify(ows.raw.slice(0, 300)));
	});
});

/* ------------------------------------------------------------------ */
/* Unknown query parameters cannot mint cache keys                     */
/* ------------------------------------------------------------------ */

async function entries(px) {
	const r = await h.request(`${px.adminUrl}/cache/stats`);
	return JSON.parse(r.body).entries;
}

test('unknown query parameters: forwarded byte for byte, answered BYPASS, never stored', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const warm = await h.request(`${px.url}${p}`);
		h.assertXCache(warm, 'MISS', 'the plain GET');
		const base = await entries(px);
		// Many variants of one id: none may take a cache entry.
		for (let i = 0; i < 20; i++) {
			for (const q of [`?v=${i}`, `?include[]=x&nonce=${i}`, `?include_obfuscation=false&z%41=${i}&`]) {
				const r = await h.request(`${px.url}${p}${q}`);
				assert.equal(r.status, 200, `${q}: ${r.body.slice(0, 200)}`);
				h.assertXCache(r, 'BYPASS', q);
				assert.equal(up.requests[up.requests.length - 1].url, `${p}${q}`, `${q}: not forwarded as sent`);
			}
		}
		const ii = await h.request(`${px.url}${p}/input_items?limit=2&v=1`);
		assert.equal(ii.status, 200, ii.body);
		h.assertXCache(ii, 'BYPASS', 'input_items with an unknown parameter');
		assert.equal(up.requests[up.requests.length - 1].url, `${p}/input_items?limit=2&v=1`);
		assert.equal(await entries(px), base, 'unknown parameters added cache entries');
		// The same request twice: both upstream, never a hit.
		const before = up.count('GET', p);
		await h.request(`${px.url}${p}?v=same`);
		const again = await h.request(`${px.url}${p}?v=same`);
		h.assertXCache(again, 'BYPASS', 'the repeat');
		assert.equal(up.count('GET', p), before + 2);
		// Known parameters still make (and hit) an entry; the plain GET's entry is intact.
		const k1 = await h.request(`${px.url}${p}?include[]=x&starting_after=1`);
		h.assertXCache(k1, 'MISS', 'known parameters');
		const k2 = await h.request(`${px.url}${p}?starting_after=1&include=x`);
		h.assertXCache(k2, 'HIT', 'known parameters, another spelling');
		const plain = await h.request(`${px.url}${p}`);
		h.assertXCache(plain, 'HIT', 'the plain GET after the variants');
	});
});

test('an uncacheable GET is not even tried for storing (no cache warning per request)', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		for (const q of ['?v=1', '?stream=yes']) {
			const r = await h.request(`${px.url}/v1/responses/${id}${q}`);
			h.assertXCache(r, 'BYPASS', q);
		}
		assert.doesNotMatch(px.stderr(), /cache: store/, 'a failed store was logged');
	});
});

test('CONNECT is refused with 405 and its connection closed: no tunnel, nothing after it runs', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		for (const target of ['example.com:443', `/v1/responses/${id}`]) {
			for (const behind of [`DELETE /v1/responses/${id}`, `GET /v1/responses/${id}`]) {
				const r = await h.exchange(px.port, `CONNECT ${target} HTTP/1.1\r\nHost: example.com:443\r\n\r\n` +
					`${behind} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n\r\n`);
				assert.ok(r.closed, `CONNECT ${target}: the proxy closed the connection`);
				assert.equal(r.answers.length, 1, `one answer: ${r.raw.slice(0, 300)}`);
				const j = h.assertOpenAIError(r.answers[0], 405, `CONNECT ${target}`);
				assert.equal(j.error.code, 'method_not_allowed');
			}
		}
		// A request read behind a CONNECT would be handled after the
		// close the client saw: a quiet second for it to show, if it can
		// (an absence is checked here, not a readiness).
		await h.delay(1000);
		const methods = px.stderr().split('\n').map((l) => / method=(\S+) /.exec(l)).filter(Boolean).map((m) => m[1]);
		assert.deepEqual([...new Set(methods)], ['CONNECT'], 'only the CONNECTs were handled');
		assert.equal(up.requests.length, 0, 'nothing reached the upstream');
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`)).status, 200, 'the id was not deleted');
	});
});
