'use strict';
// The request guard's state belongs to one connection: a client that sent a
// NUL after its answer, or left half-way through its headers, leaves
// nothing behind for the next connection (likely on the same descriptor),
// and a NUL in a pipelined second request fails that request, not the
// first.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { openSocket, head } = require('../lib/hostile');

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
