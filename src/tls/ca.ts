import {
  X509Certificate,
  constants,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  privateEncrypt,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';

export interface LeafCert {
  certPem: string;
  keyPem: string;
}

export interface CaInfo {
  subject: string;
  fingerprint256: string;
  notBefore: Date;
  notAfter: Date;
}

const CA_CERT = 'ca.pem';
const CA_KEY = 'ca-key.pem';
const LEAF_KEY = 'leaf-key.pem';

const DAY_MS = 24 * 60 * 60 * 1000;
// Backdating tolerates clients whose clocks run behind ours.
const BACKDATE_MS = DAY_MS;
const CA_VALIDITY_MS = 10 * 365 * DAY_MS;
// Browsers reject server certs valid for more than 398 days; stay under it.
const LEAF_VALIDITY_MS = 397 * DAY_MS;
// Re-mint a cached leaf this long before it expires, for long-running relays.
const LEAF_RENEW_MARGIN_MS = DAY_MS;
const LEAF_CACHE_MAX = 1000;
// X.509 caps CN at 64 characters; longer names live only in the SAN.
const CN_MAX = 64;

const CA_SUBJECT: forge.pki.CertificateField[] = [
  { name: 'commonName', value: 'postguard interception CA' },
  { name: 'organizationName', value: 'postguard' },
];

interface CachedLeaf {
  leaf: LeafCert;
  notAfter: number;
}

export class CertificateAuthority {
  readonly certPem: string;
  readonly #caCert: forge.pki.Certificate;
  readonly #caSigner: forge.pki.rsa.PrivateKey;
  readonly #caKeyId: string;
  readonly #leafKeyPem: string;
  readonly #leafPublicKey: forge.pki.PublicKey;
  readonly #leaves = new Map<string, CachedLeaf>();

  /** Parses once up front so minting a leaf is only build + sign. */
  constructor(certPem: string, caKeyPem: string, leafKeyPem: string) {
    this.certPem = certPem;
    this.#caCert = forge.pki.certificateFromPem(certPem);
    this.#caSigner = nativeSigner(createPrivateKey(caKeyPem));
    // AKI must carry the *CA's* key id; forge's `keyIdentifier: true` would use the leaf's.
    this.#caKeyId = this.#caCert.generateSubjectKeyIdentifier().getBytes();
    this.#leafKeyPem = leafKeyPem;
    this.#leafPublicKey = forgePublicKey(leafKeyPem);
  }

  info(): CaInfo {
    const x = new X509Certificate(this.certPem);
    return {
      subject: x.subject.split('\n').join(', '),
      fingerprint256: x.fingerprint256,
      notBefore: x.validFromDate,
      notAfter: x.validToDate,
    };
  }

  /** Leaf for the given DNS names and/or IP addresses (SANs). Cached by the sorted, lower-cased name set. */
  leafFor(names: readonly string[]): LeafCert {
    const cleaned = names.map(normalizeName).filter((n) => n.length > 0);
    if (cleaned.length === 0) throw new Error('leafFor: at least one DNS name or IP address is required');
    const key = [...new Set(cleaned)].sort().join(',');

    const hit = this.#leaves.get(key);
    if (hit && hit.notAfter - LEAF_RENEW_MARGIN_MS > Date.now()) {
      // Re-insert so eviction drops the least recently used entry, not a hot one.
      this.#leaves.delete(key);
      this.#leaves.set(key, hit);
      return hit.leaf;
    }

    const cert = this.#mint(cleaned);
    const entry: CachedLeaf = {
      leaf: { certPem: forge.pki.certificateToPem(cert), keyPem: this.#leafKeyPem },
      notAfter: cert.validity.notAfter.getTime(),
    };
    this.#leaves.delete(key);
    this.#leaves.set(key, entry);
    if (this.#leaves.size > LEAF_CACHE_MAX) {
      const oldest = this.#leaves.keys().next().value;
      if (oldest !== undefined) this.#leaves.delete(oldest);
    }
    return entry.leaf;
  }

  #mint(names: string[]): forge.pki.Certificate {
    const now = Date.now();
    const cert = forge.pki.createCertificate();
    cert.publicKey = this.#leafPublicKey;
    cert.serialNumber = randomSerial();
    cert.validity.notBefore = new Date(now - BACKDATE_MS);
    // A leaf outliving its issuer would fail validation anyway; make that explicit.
    cert.validity.notAfter = new Date(
      Math.min(now - BACKDATE_MS + LEAF_VALIDITY_MS, this.#caCert.validity.notAfter.getTime()),
    );
    const first = names[0]!;
    cert.setSubject(first.length <= CN_MAX ? [{ name: 'commonName', value: first }] : []);
    cert.setIssuer(this.#caCert.subject.attributes);
    const uniq = [...new Set(names)];
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        // RFC 5280: SAN must be critical when the subject is empty.
        critical: first.length > CN_MAX,
        altNames: uniq.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })),
      },
      { name: 'authorityKeyIdentifier', keyIdentifier: this.#caKeyId },
    ]);
    cert.sign(this.#caSigner, forge.md.sha256.create());
    return cert;
  }
}

/** Load the CA from dir, creating it (and the dir, mode 0700) if missing. */
export function loadOrCreateCa(dir: string): { ca: CertificateAuthority; created: boolean } {
  const present = [CA_CERT, CA_KEY].filter((f) => existsSync(join(dir, f)));
  if (present.length === 0) return { ca: initCa(dir), created: true };
  return { ca: loadCa(dir), created: false };
}

/** Create a new CA in dir; refuses if ca-key.pem already exists unless force is true. */
export function initCa(dir: string, opts: { force?: boolean } = {}): CertificateAuthority {
  if (!opts.force && existsSync(join(dir, CA_KEY))) {
    throw new Error(
      `refusing to overwrite existing CA key ${join(dir, CA_KEY)}: clients trusting the old CA would break (use force to replace it)`,
    );
  }
  ensureDir(dir);

  const caKey = generateRsaKey();
  const leafKey = generateRsaKey();
  const certPem = buildCaCert(caKey);

  // ca.pem goes last: a crash midway leaves keys without a cert, which loadCa reports.
  writeAtomic(join(dir, LEAF_KEY), leafKey, 0o600);
  writeAtomic(join(dir, CA_KEY), caKey, 0o600);
  writeAtomic(join(dir, CA_CERT), certPem, 0o644);
  return new CertificateAuthority(certPem, caKey, leafKey);
}

/** Load an existing CA; throws naming the missing file if absent. */
export function loadCa(dir: string): CertificateAuthority {
  const certPath = join(dir, CA_CERT);
  const keyPath = join(dir, CA_KEY);
  const leafPath = join(dir, LEAF_KEY);
  for (const p of [certPath, keyPath]) {
    if (!existsSync(p)) {
      throw new Error(
        `CA file missing: ${p} (CA directory ${dir} is incomplete; restore it or re-create the CA with initCa force)`,
      );
    }
  }
  const certPem = readFileSync(certPath, 'utf8');
  const caKeyPem = readFileSync(keyPath, 'utf8');

  // A mismatched pair would mint leaves no client can verify; fail at startup instead.
  const certSpki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  const keySpki = createPublicKey(createPrivateKey(caKeyPem)).export({ type: 'spki', format: 'der' });
  if (!certSpki.equals(keySpki)) throw new Error(`CA key ${keyPath} does not match certificate ${certPath}`);

  // The leaf key carries no trust, so a lost one is simply regenerated.
  if (!existsSync(leafPath)) writeAtomic(leafPath, generateRsaKey(), 0o600);
  const leafKeyPem = readFileSync(leafPath, 'utf8');
  return new CertificateAuthority(certPem, caKeyPem, leafKeyPem);
}

function buildCaCert(caKeyPem: string): string {
  const now = Date.now();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forgePublicKey(caKeyPem);
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now - BACKDATE_MS);
  cert.validity.notAfter = new Date(now - BACKDATE_MS + CA_VALIDITY_MS);
  cert.setSubject(CA_SUBJECT);
  cert.setIssuer(CA_SUBJECT);
  cert.setExtensions([
    // pathLen 0: this CA only ever signs leaves, never sub-CAs.
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(nativeSigner(createPrivateKey(caKeyPem)), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

// DER DigestInfo header for SHA-256 (RFC 8017 §9.2 note 1); the 32-byte digest follows.
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/**
 * A stand-in for a forge RSA key whose sign() runs in node:crypto. forge's pure-JS RSA private
 * operation costs ~40 ms per 2048-bit signature, which alone blows the per-leaf budget; native
 * PKCS#1 v1.5 over forge's SHA-256 digest yields byte-identical signatures in well under 1 ms.
 */
function nativeSigner(key: KeyObject): forge.pki.rsa.PrivateKey {
  const signer = {
    sign(md: forge.md.MessageDigest): string {
      if (md.algorithm !== 'sha256') throw new Error(`nativeSigner: only sha256 is supported, got ${md.algorithm}`);
      const digest = Buffer.from(md.digest().getBytes(), 'binary');
      const digestInfo = Buffer.concat([SHA256_DIGEST_INFO, digest]);
      return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, digestInfo).toString('binary');
    },
  };
  // cert.sign() only ever calls key.sign(md), so this shape is all forge needs.
  return signer as unknown as forge.pki.rsa.PrivateKey;
}

function forgePublicKey(privateKeyPem: string): forge.pki.PublicKey {
  return forge.pki.publicKeyFromPem(
    createPublicKey(privateKeyPem).export({ type: 'spki', format: 'pem' }).toString(),
  );
}

/** node:crypto keygen is native; forge's pure-JS keygen takes seconds. */
function generateRsaKey(): string {
  return generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  }).privateKey;
}

/** 16 random bytes, high bit clear (DER INTEGER must be positive) and non-zero first byte (minimal encoding). */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f || 0x01;
  return b.toString('hex');
}

function normalizeName(name: string): string {
  // Trailing dot is the DNS root; certificates never carry it.
  return name.trim().toLowerCase().replace(/\.$/, '');
}

function ensureDir(dir: string): void {
  // Only tighten permissions on a directory we created, not a user-supplied existing one;
  // chmod because umask can loosen the create mode.
  if (mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined) chmodSync(dir, 0o700);
}

/** Temp + rename so a crash never leaves a truncated PEM; chmod because umask can loosen the create mode. */
function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
