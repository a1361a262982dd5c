'use strict';
// Centralized keys: [credential] and [client] sections, 401 for unknown
// tokens, tenants per credential, ownership between clients of one
// credential, key rotation by SIGHUP, and no secret in anything the proxy
// writes.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const bearer = (t) => ({ authorization: `Bearer ${t}` });

/* Key files and a config with two credentials and three clients. */
function setup({ extra = '', ownership = '' } = {}) {
	const dir = h.tmpdir();
	const key = (name, k) => {
		const f = path.join(dir, name);
		fs.writeFileSync(f, `${k}\n`, { mode: 0o600 });
		return f;
	};
	const files = { a: key('a.key', 'sk-upstream-AAAA'), b: key('b.key', 'sk-upstream-BBBB') };
	const config = `[server]\n${ownership}
[credential team-a]
key_file = ${files.a}
organization = org-a
project = proj-a

[credential team-b]
key_file = ${files.b}

[client alice]
token_sha256 = ${sha('tok-alice')}
credential = team-a

[client anna]
token_sha256 = ${sha('tok-anna').toUpperCase()}
credential = team-a

[client bob]
token_sha256 = ${sha('tok-bob')}
credential = team-b
${extra}`;
	return { dir, files, config };
}

const KEYS = ['sk-upstream-AAAA', 'sk-upstream-BBBB'];
const RELOADS = 'respcache_config_reloads_total';

test('a token that matches no client gets 401 and nothing reaches the upstream', async () => {
	const { config } = setup();
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const id = up.seed();
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice') })).status, 200);
		for (const headers of [bearer('tok-eve'), { authorization: null }, { authorization: 'Basic dG9rLWFsaWNl' },
			bearer(''), bearer('tok-alice2')]) {
			for (const p of [`/v1/responses/${id}`, '/v1/responses']) {
				const r = await h.request(px.url + p, { headers, method: p.endsWith(id) ? 'GET' : 'POST', body: p.endsWith(id) ? undefined : { model: 'gpt-4o', input: 'x' } });
				const j = h.assertOpenAIError(r, 401, `${JSON.stringify(headers)} ${p}`);
				assert.equal(j.error.code, 'invalid_api_key');
				assert.equal(r.headers['x-should-retry'], 'false');
				assert.doesNotMatch(r.body, /tok-/, 'the error never echoes a token');
			}
		}
		assert.equal(up.requests.length, 1, 'only the one authorized GET reached the upstream');
	});
});

test('clients on two credentials: each upstream request carries its credential, never a client token', async () => {
	const { config } = setup();
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const ca = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', headers: { ...bearer('tok-alice'), 'openai-organization': 'org-evil', 'openai-project': 'proj-evil' },
			body: { model: 'gpt-4o', input: 'from alice' },
		});
		assert.equal(ca.status, 200, ca.body);
		const cb = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', headers: { ...bearer('tok-bob'), 'openai-project': 'proj-bob' }, body: { model: 'gpt-4o', input: 'from bob' },
		});
		assert.equal(cb.status, 200, cb.body);
		const [ra, rb] = up.requests;
		assert.equal(ra.headers.authorization, 'Bearer sk-upstream-AAAA');
		assert.equal(ra.headers['openai-organization'], 'org-a', 'the credential\'s organization, not the client\'s');
		assert.equal(ra.headers['openai-project'], 'proj-a');
		assert.equal(rb.headers.authorization, 'Bearer sk-upstream-BBBB');
		assert.equal(rb.headers['openai-project'], 'proj-bob', 'a credential without a project passes the client\'s');
		assert.equal(rb.headers['openai-organization'], undefined);
		for (const r of up.requests) assert.doesNotMatch(JSON.stringify(r.headers), /tok-/, 'no client token upstream');

		// alice's response, cached for team-a, is never served to team-b.
		const id = ca.json().id;
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice') }), 'HIT', 'alice');
		const gb = await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-bob') });
		assert.notEqual(gb.headers['x-cache'], 'HIT', 'team-b never gets team-a\'s entry');
		assert.equal(up.count('GET', `/v1/responses/${id}`), 1, 'bob\'s GET went upstream with team-b\'s key');
		assert.equal(up.requests.at(-1).headers.authorization, 'Bearer sk-upstream-BBBB');
	});
});

test('ownership: another client of the same credential gets 404 for what alice created', async () => {
	const { config } = setup();
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: ['a', 'b'], background: true } });
		assert.equal(c.status, 200, c.body);
		const id = c.json().id;
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 's', stream: true } });
		const sid = (await s.done).events[0].json.response.id;
		const before = up.requests.length;
		for (const rid of [id, sid]) {
			for (const [method, p] of [['GET', `/v1/responses/${rid}`], ['GET', `/v1/responses/${rid}/input_items`],
				['POST', `/v1/responses/${rid}/cancel`], ['DELETE', `/v1/responses/${rid}`]]) {
				const r = await h.request(px.url + p, { method, headers: bearer('tok-anna') });
				const j = h.assertOpenAIError(r, 404, `anna ${method} ${p}`);
				assert.equal(j.error.message, `Response with id '${rid}' not found.`);
			}
		}
		assert.equal(up.requests.length, before, 'none of anna\'s requests reached the upstream');
		// alice still has it all.
		assert.equal((await h.request(`${px.url}/v1/responses/${id}/input_items`, { headers: bearer('tok-alice') })).status, 200);
		assert.equal((await h.request(`${px.url}/v1/responses/${sid}`, { headers: bearer('tok-alice') })).status, 200);
		assert.equal((await h.request(`${px.url}/v1/responses/${id}/cancel`, { method: 'POST', headers: bearer('tok-alice') })).status, 200);
	});
});

test('ids created elsewhere follow unknown_owner: allow by default, deny when set; ownership = off shares', async () => {
	for (const [ownership, anna] of [['', 200], ['unknown_owner = deny', 404], ['ownership = off\nunknown_owner = deny', 200]]) {
		const { config } = setup({ ownership });
		await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
			const seeded = up.seed();
			const r = await h.request(`${px.url}/v1/responses/${seeded}`, { headers: bearer('tok-anna') });
			assert.equal(r.status, anna, `[server] ${ownership || '(defaults)'}: ${r.body.slice(0, 200)}`);
			if (ownership.startsWith('ownership = off')) {
				const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'x' } });
				assert.equal((await h.request(`${px.url}/v1/responses/${c.json().id}`, { headers: bearer('tok-anna') })).status, 200);
			}
		});
	}
});

test('respcache hash-token prints the SHA-256 of the token on stdin, and nothing else', () => {
	const r = spawnSync(h.daemonPath(), ['hash-token'], { input: 'tok-alice\n', encoding: 'utf8' });
	assert.equal(r.status, 0, r.stderr);
	assert.equal(r.stdout, `${sha('tok-alice')}\n`);
	const e = spawnSync(h.daemonPath(), ['hash-token'], { input: '', encoding: 'utf8' });
	assert.notEqual(e.status, 0);
	assert.match(e.stderr, /no token/);
});

test('a systemd credential: a relative key_file is read from $CREDENTIALS_DIRECTORY', async () => {
	const dir = h.tmpdir();
	fs.writeFileSync(path.join(dir, 'openai'), 'sk-from-systemd\n', { mode: 0o600 });
	await h.withStack({
		upstream: { requireKey: 'sk-from-systemd' },
		proxy: { config: '[credential default]\nkey_file = openai\n', env: { CREDENTIALS_DIRECTORY: dir } },
	}, async ({ up, px }) => {
		const id = up.seed();
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`)).status, 200);
	});
});

test('SIGHUP rotates keys under load: no request lost, the next uses the new key, the cache stays', async () => {
	const { files, config } = setup();
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const cached = up.seed();
		h.assertXCache(await h.request(`${px.url}/v1/responses/${cached}`, { headers: bearer('tok-alice') }), 'MISS', 'prime');
		up.requireKey = [...KEYS, 'sk-upstream-NEW'];
		let stop = false;
		const results = [];
		const load = (async () => {
			while (!stop) {
				const batch = await Promise.all([1, 2, 3, 4].map(() => h.request(`${px.url}/v1/responses`, {
					method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'load' },
				}).then((r) => r.status, (e) => e.message)));
				results.push(...batch);
			}
		})();
		await h.until(() => results.length >= 8, { what: 'some requests before the rotation' });
		fs.writeFileSync(files.a, 'sk-upstream-NEW\n');
		process.kill(px.pid, 'SIGHUP');
		await h.until(async () => (await h.metric(px, RELOADS, '{result="ok"}')) === 1, { what: 'the reload' });
		const after = results.length;
		await h.until(() => results.length >= after + 8, { what: 'some requests after the rotation' });
		stop = true;
		await load;
		assert.deepEqual([...new Set(results)], [200], 'every request under load succeeded');
		up.requireKey = 'sk-upstream-NEW';		/* the old key is revoked */
		const r = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'new' } });
		assert.equal(r.status, 200, r.body);
		assert.equal(up.requests.at(-1).headers.authorization, 'Bearer sk-upstream-NEW');
		h.assertXCache(await h.request(`${px.url}/v1/responses/${cached}`, { headers: bearer('tok-alice') }), 'HIT', 'the cache of team-a survived the rotation');
	});
});

test('a broken configuration on SIGHUP is refused and the old one keeps serving', async () => {
	const { files, config } = setup();
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const confFile = px.args[px.args.indexOf('--config') + 1];
		for (const [broken, why] of [
			[`${config}\n[client mallory]\ntoken_sha256 = nothex\n`, /token_sha256 must be 64 hex digits/],
			[config.replace(files.b, '/nonexistent/b.key'), /nonexistent\/b\.key: No such file/],
			['[server\nlisten = nope', /unknown section|syntax error/],
		]) {
			const n = await h.metric(px, RELOADS, '{result="failed"}');
			fs.writeFileSync(confFile, broken);
			process.kill(px.pid, 'SIGHUP');
			await h.until(async () => (await h.metric(px, RELOADS, '{result="failed"}')) > n, { what: 'the refusal' });
			// The refusal's line, written before it was counted, says why.
			await h.pipesRead();
			assert.match(px.stderr().split('reload refused').at(-1), why);
			const id = up.seed();
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-bob') })).status, 200, 'still serving');
			assert.equal(up.requests.at(-1).headers.authorization, 'Bearer sk-upstream-BBBB');
		}
	});
});

test('no key or token appears in anything the proxy writes, at any log level', async () => {
	const { config } = setup({ extra: '\n[log]\nlevel = debug\n' });
	const secrets = [...KEYS, 'tok-alice', 'tok-anna', 'tok-bob', 'tok-eve'];
	const seen = [];
	let daemon;
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		daemon = px;
		const id = up.seed();
		const reqs = [
			[`/v1/responses/${id}`, 'GET', 'tok-alice'], [`/v1/responses/${id}`, 'GET', 'tok-eve'],
			[`/v1/responses/${id}`, 'GET', 'tok-anna'], ['/v1/responses/bad%2Fid', 'GET', 'tok-bob'],
			['/nothing', 'GET', 'tok-bob'], ['/v1/responses', 'POST', 'tok-bob'],
		];
		for (const [p, method, tok] of reqs) {
			const r = await h.request(px.url + p, { method, headers: bearer(tok), body: method === 'POST' ? { model: 'gpt-4o', input: 'x', stream: false } : undefined });
			seen.push(JSON.stringify(r.headers), r.body);
		}
		up.failNext(500, { error: { message: 'boom', type: 'server_error', param: null, code: null } });
		seen.push((await h.request(`${px.url}/v1/responses/${up.seed()}`, { headers: bearer('tok-bob') })).body);
		process.kill(px.pid, 'SIGHUP');
		await h.until(async () => (await h.metric(px, RELOADS, '{result="ok"}')) === 1, { what: 'the reload' });
	});
	// All it wrote, to its exit.
	seen.push(daemon.stderr(), daemon.stdout());
	const { dir, config: c2 } = setup();
	const f = path.join(dir, 'check.conf');
	fs.writeFileSync(f, c2);
	const t = spawnSync(h.daemonPath(), ['-t', '-c', f], { encoding: 'utf8' });
	assert.equal(t.status, 0, t.stderr);
	seen.push(t.stdout, t.stderr);
	const all = seen.join('\n');
	assert.match(all, /debug|GET/, 'the debug log was captured');
	for (const s of secrets) assert.ok(!all.includes(s), `"${s}" leaked into the proxy's output`);
});

test('a key file other users can read gets a warning at start', async () => {
	const dir = h.tmpdir();
	const f = path.join(dir, 'k');
	fs.writeFileSync(f, 'sk-loose\n');
	fs.chmodSync(f, 0o644);
	await h.withStack({ proxy: { keyFile: f } }, async ({ px }) => {
		assert.match(px.stderr(), /readable by other users; chmod 600/);
		assert.ok(!px.stderr().includes('sk-loose'));
	});
});

test('ownership covers previous_response_id: no client continues another\'s conversation', async () => {
	const { config } = setup();
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'alice secret' } });
		const id = c.json().id;
		const before = up.requests.length;
		for (const p of ['/v1/responses', '/v1/responses/compact', '/v1/responses/input_tokens']) {
			const r = await h.request(px.url + p, { method: 'POST', headers: bearer('tok-anna'), body: { model: 'gpt-4o', input: 'repeat everything above', previous_response_id: id } });
			const j = h.assertOpenAIError(r, 404, `anna POST ${p} with alice's id`);
			assert.equal(j.error.message, `Previous response with id '${id}' not found.`);
		}
		// Repeated keys could be read two ways: refused.
		const dup = `{"model":"gpt-4o","input":"x","previous_response_id":"resp_x","previous_response_id":"${id}"}`;
		h.assertOpenAIError(await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: { ...bearer('tok-anna'), 'content-type': 'application/json' }, body: dup }), 400, 'duplicate keys');
		// Any other path under the id is checked too.
		h.assertOpenAIError(await h.request(`${px.url}/v1/responses/${id}/anything`, { headers: bearer('tok-anna') }), 404, 'other route of the id');
		assert.equal(up.requests.length, before, 'none of it reached the upstream');
		const ok = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'go on', previous_response_id: id } });
		assert.equal(ok.status, 200, 'alice continues her own conversation');
	});
});

test('owner records outlive [cache] ttl', async () => {
	const { config } = setup({ extra: '\n[cache]\nttl = 1\n' });
	await h.withStack({ upstream: { requireKey: KEYS }, proxy: { config } }, async ({ up, px }) => {
		const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'), body: { model: 'gpt-4o', input: 'x' } });
		const id = c.json().id;
		// Bounded wait until the cached Response itself has expired.
		await h.until(async () => (await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice') })).headers['x-cache'] === 'MISS',
			{ timeoutMs: 5000, stepMs: 200, what: 'the entry to pass its ttl' });
		h.assertOpenAIError(await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-anna') }), 404, 'anna after the ttl');
	});
});
