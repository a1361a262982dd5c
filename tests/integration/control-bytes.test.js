'use strict';
// CR, LF and NUL where HTTP allows none: inside a header's value or name, as
// an obs-fold continuation line, or percent-encoded in the query of any
// route.  Each such request gets a 400 in the OpenAI error shape, and
// nothing reaches the upstream, not even a request its own parser would
// have refused.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { head, CREATE_BODY, upSaw, watchUpstream } = require('../lib/hostile');

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
