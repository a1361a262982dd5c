'use strict';
// Slow clients (slow-loris): connections that stall half-way through a
// request, or dribble a header one byte at a time, are cut off within
// seconds of client_timeout and never served (a stalled half POST is never
// forwarded), while other clients' hits and misses are answered promptly.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { openSocket } = require('../lib/hostile');

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
