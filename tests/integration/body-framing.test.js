'use strict';
// A request body framed so that two HTTP parsers could read it two ways:
// Content-Length together with Transfer-Encoding: chunked, two
// Content-Lengths (or one with a list), a Transfer-Encoding other than
// plain chunked, a Content-Length that is negative, not a number or too
// big.  Each is refused in the OpenAI error shape (400; 501 allowed for a
// Transfer-Encoding, 413 for a Content-Length) and nothing reaches the
// upstream; a request pipelined behind two framings or two lengths is never
// answered, and with both framings the connection is closed.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { head, chunked, CREATE_BODY, upSaw, watchUpstream } = require('../lib/hostile');

const SMUGGLE_PROBE = '/v1/responses/resp_smuggled_probe';

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
