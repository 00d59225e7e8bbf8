// A real OpenID Connect provider (the certified `oidc-provider` package) for the console's
// sign-in tests, served over HTTPS on 127.0.0.1 with a certificate from the tests' CA.
//
// Environment: OIDC_PORT, OIDC_CERT, OIDC_KEY (PEM files), OIDC_ACCOUNTS_FILE (JSON: login ->
// {"groups": [...]}, read at every sign-in so that tests can change a person's groups; a
// login not listed gets no groups; any password is accepted), OIDC_CLIENTS_FILE (JSON list of
// clients registered before a restart). Clients register themselves (dynamic client
// registration, RFC 7591), so the tests can name any redirect URI.
// Prints "listening <issuer>" when ready.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `https://127.0.0.1:${port}`;
const accounts = () => JSON.parse(readFileSync(process.env.OIDC_ACCOUNTS_FILE, 'utf8'));
// A new key (and key id) at every start: a restart is a key rotation.
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

const plainPage = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8">
<title>${title}</title></head><body>${body}</body></html>`;

const clients = JSON.parse(readFileSync(process.env.OIDC_CLIENTS_FILE, 'utf8'));

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [{ ...signingKey.export({ format: 'jwk' }), kid: `key-${Date.now()}`, use: 'sig', alg: 'RS256' }] },
  cookies: { keys: ['sparkplane-test-cookie-key'] },
  // The groups go into the ID token itself, which is what the console reads.
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'groups'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // The defaults load a web font from the internet; this box has none.
      logoutSource: async (ctx, form) => {
        ctx.body = plainPage('Sign out', `${form}<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = plainPage('Signed out', '<p>Signed out.</p>');
      },
    },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, groups: (accounts()[id] || {}).groups || [] };
      },
    };
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
});

const server = createServer({ cert: readFileSync(process.env.OIDC_CERT), key: readFileSync(process.env.OIDC_KEY) },
  provider.callback());
server.listen(port, '127.0.0.1', () => console.log(`listening ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
