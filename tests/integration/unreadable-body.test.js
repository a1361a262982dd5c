'use strict';
// A request body the proxy cannot read whole is never forwarded on a route
// whose rules depend on it: 400 in the OpenAI shape, and the upstream never
// sees it.  JSON that jansson refuses but a more lenient parser might take
// (a real out of range, an integer past 64 bits, \u0000 in a string,
// repeated keys) could otherwise slip a previous_response_id past the
// ownership check, or get an include[] variant cached as the plain GET.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const bearer = (t) => ({ authorization: `Bearer ${t}` });

/* Bodies jansson cannot read exactly, each around a field that matters. */
function unreadable(field) {
	return [
		`{"model":"gpt-4o","input":"x","temperature":1e400,${field}}`,
		`{"model":"gpt-4o","input":"x","max_output_tokens":123456789012345678901234567890,${field}}`,
		`{"model":"gpt-4o","input":"x\\u0000y",${field}}`,
		`{"model":"gpt-4o","model":"gpt-4o","input":"x",${field}}`,
		`{"model":"gpt-4o","input":"x",${field}`,
		Buffer.concat([Buffer.from('{"model":"gpt-4o","input":"'), Buffer.from([0xff]), Buffer.from(`",${field}}`)]),
	];
}

function clientsConfig(dir) {
	const f = path.join(dir, 'a.key');
	fs.writeFileSync(f, 'sk-upstream-AAAA\n', { mode: 0o600 });
	return `[credential team]\nkey_file = ${f}\n
[client alice]\ntoken_sha256 = ${sha('tok-alice')}\ncredential = team\n
[client anna]\ntoken_sha256 = ${sha('tok-anna')}\ncredential = team\n`;
}

test('an unreadable body cannot carry another client\'s previous_response_id past ownership', async () => {
	const config = clientsConfig(h.tmpdir());
	await h.withStack({ proxy: { config } }, async ({ up, px }) => {
		const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'secret' } });
		assert.equal(c.status, 200, c.body);
		const id = c.json().id;
		const posts = up.count('POST');
		const routes = ['/v1/responses', '/v1/responses/input_tokens', '/v1/responses/compact'];
		for (const route of routes) {
			for (const body of unreadable(`"previous_response_id":"${id}"`)) {
				const r = await h.request(px.url + route, { method: 'POST', headers: { ...bearer('tok-anna'), 'content-type': 'application/json' }, body });
				const j = h.assertOpenAIError(r, 400, `${route} ${body.slice(0, 60)}`);
				assert.equal(j.error.code, 'invalid_json');
			}
			const r = await h.request(px.url + route, { method: 'POST', headers: { ...bearer('tok-anna'), 'content-type': 'application/json' }, body: `{"model":"gpt-4o","input":"x","previous_response_id":{"id":"${id}"}}` });
			h.assertOpenAIError(r, 400, `${route}: a previous_response_id that is not a string`);
		}
		assert.equal(up.count('POST'), posts, 'no unreadable body reached the upstream');
		// The owner herself still gets through, and readable bodies as ever.
		const ok = await h.request(`${px.url}/v1/responses/input_tokens`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'x', previous_response_id: id } });
		assert.equal(ok.status, 200, ok.body);
	});
});

test('an unreadable create is refused even with no clients, and never cached as the plain GET', async () => {
	await h.withStack({}, async ({ up, px }) => {
		for (const body of unreadable('"include":["message.output_text.logprobs"]')) {
			const r = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
			const j = h.assertOpenAIError(r, 400, body.slice(0, 60));
			assert.equal(j.error.code, 'invalid_json');
			assert.match(j.error.message, /not JSON that respcache can read exactly/);
		}
		for (const body of ['', '[]', '"x"', 'null']) {
			h.assertOpenAIError(await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }), 400, `body ${JSON.stringify(body)}`);
		}
		assert.equal(up.count('POST'), 0, 'nothing reached the upstream');
		// A readable create with include[] is still forwarded, and not
		// stored as the plain GET's entry.
		const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', include: ['message.output_text.logprobs'] } });
		assert.equal(c.status, 200, c.body);
		h.assertXCache(await h.request(`${px.url}/v1/responses/${c.json().id}`), 'MISS', 'the plain GET after an include create');
	});
});

test('the upstream refusing the proxy\'s own key: the client gets the proxy\'s message, never the key\'s tail', async () => {
	const dir = h.tmpdir();
	const f = path.join(dir, 'k');
	fs.writeFileSync(f, 'sk-proj-revoked-WXYZ\n', { mode: 0o600 });
	await h.withStack({ upstream: { requireKey: 'sk-live' }, proxy: { keyFile: f } }, async ({ up, px }) => {
		const id = up.seed();
		for (const [method, p, body] of [['GET', `/v1/responses/${id}`], ['POST', '/v1/responses', { model: 'gpt-4o', input: 'x' }], ['DELETE', `/v1/responses/${id}`]]) {
			const r = await h.request(px.url + p, { method, body });
			const j = h.assertOpenAIError(r, 401, `${method} ${p}`);
			assert.equal(j.error.code, 'upstream_key_refused');
			assert.doesNotMatch(r.body, /WXYZ|platform\.openai\.com/, 'nothing of the upstream\'s message');
		}
		// The operator's line, written before the first 401 was sent.
		await h.pipesRead();
		assert.match(px.stderr(), /upstream refused credential 'default' \(401\)/, 'the upstream\'s answer in the log');
		assert.doesNotMatch(px.stderr(), /sk-proj-revoked/, 'never the key itself');
	});
	// In pass-through mode the client's own key was refused: its 401 passes.
	await h.withStack({ upstream: { requireKey: 'sk-live' } }, async ({ px }) => {
		const r = await h.request(`${px.url}/v1/responses/resp_x`, { headers: bearer('sk-wrong') });
		const j = h.assertOpenAIError(r, 401, 'pass-through');
		assert.equal(j.error.code, 'invalid_api_key');
	});
});

test('a 200 whose body is not a JSON object is a 502, never cached', async () => {
	for (const bad of ['<html>oops</html>', '', '[1,2]', '{"id":"resp_1","object":"response"', 'null']) {
		await h.withStack({}, async ({ up, px }) => {
			const id = up.seed();
			up.override = (req, res) => {
				if (req.method !== 'GET') return false;
				res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(bad) });
				res.end(bad);
				return true;
			};
			for (let i = 0; i < 2; i++) {
				const r = await h.request(`${px.url}/v1/responses/${id}`);
				const j = h.assertOpenAIError(r, 502, `body ${JSON.stringify(bad)}`);
				assert.equal(j.error.code, 'upstream_invalid_answer');
			}
			assert.equal(up.count('GET'), 2, 'nothing was cached');
		});
	}
});
