'use strict';
// Requests over the size limits: a header block over max_header_size (one
// huge header, or thousands of small ones) gets 431 or 400, a body over
// max_body_size gets 413 (with Content-Length, chunked, or announced with
// Expect: 100-continue and refused before it is sent), all in the OpenAI
// error shape, and nothing is forwarded; a header block just under the
// limit is served.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { head, chunked, upSaw } = require('../lib/hostile');

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
