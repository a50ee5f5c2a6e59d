"""WireGuard constants: the whitepaper's first, then wire sizes, then limits.

Pure data; imports nothing but ``typing``. Names follow the whitepaper
(section 6.1 "Protocol constants") and wireguard-go's
``device/constants.go``; times are float seconds, to be compared with the
monotonic ``now`` the caller passes in.
"""

from __future__ import annotations

from typing import Final

# --- Noise construction and labels (whitepaper 5.4) --------------------------

CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"

# --- Timers and limits (whitepaper 6.1) ---------------------------------------

REKEY_AFTER_MESSAGES: Final = 1 << 60
REJECT_AFTER_MESSAGES: Final = (1 << 64) - (1 << 13) - 1  # wireguard-go; kernel 2^64 - 8130
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
KEEPALIVE_TIMEOUT: Final = 10.0
# Jitter added to each retransmit timer: uniform in [0, 0.334) s, as
# wireguard-go's ``fastrandn(RekeyTimeoutJitterMaxMs)`` with 334 ms gives
# 0..333 ms. Exclusive upper bound.
REKEY_TIMEOUT_JITTER_MAX: Final = 0.334
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
# Data sent and nothing heard back for this long: start a handshake.
NEW_HANDSHAKE_TIME: Final = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT  # 15 s
# The initiator of the current keypair rekeys after receiving data on a
# keypair this old ("last minute" rekey), 180 - 10 - 5 = 165 s.
REKEY_AFTER_TIME_RECEIVING: Final = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
# Keys, handshake and staged packets are wiped after this long without a new session.
WIPE_AFTER_TIME: Final = REJECT_AFTER_TIME * 3  # 540 s
COOKIE_REFRESH_TIME: Final = 120.0
# A peer's initiations are accepted at most once per this interval (flood guard).
HANDSHAKE_INITIATION_RATE: Final = 0.020

# --- Message types and sizes (whitepaper 5.4, wireguard-go noise-protocol.go) -

MESSAGE_INITIATION_TYPE: Final = 1
MESSAGE_RESPONSE_TYPE: Final = 2
MESSAGE_COOKIE_REPLY_TYPE: Final = 3
MESSAGE_TRANSPORT_TYPE: Final = 4

KEY_SIZE: Final = 32  # X25519 keys, PSK, symmetric keys, BLAKE2s-256 output
TAG_SIZE: Final = 16  # Poly1305
MAC_SIZE: Final = 16  # keyed BLAKE2s-128: mac1, mac2, the cookie
TIMESTAMP_SIZE: Final = 12  # TAI64N
COOKIE_NONCE_SIZE: Final = 24  # XChaCha20-Poly1305

MESSAGE_INITIATION_SIZE: Final = 148
MESSAGE_RESPONSE_SIZE: Final = 92
MESSAGE_COOKIE_REPLY_SIZE: Final = 64
MESSAGE_TRANSPORT_HEADER_SIZE: Final = 16
MESSAGE_TRANSPORT_MIN_SIZE: Final = MESSAGE_TRANSPORT_HEADER_SIZE + TAG_SIZE  # 32
MESSAGE_KEEPALIVE_SIZE: Final = MESSAGE_TRANSPORT_MIN_SIZE
MAX_MESSAGE_SIZE: Final = 65535  # wireguard-go MaxSegmentSize
MAX_CONTENT_SIZE: Final = MAX_MESSAGE_SIZE - MESSAGE_TRANSPORT_MIN_SIZE

# --- Transport data (whitepaper 5.4.6) ----------------------------------------

PADDING_MULTIPLE: Final = 16
DEFAULT_MTU: Final = 1420  # 1500 - 40 (IPv6) - 8 (UDP) - 32 (WireGuard)
MAX_STAGED_PACKETS: Final = 128  # per peer, awaiting a keypair; oldest dropped

# --- Replay window (RFC 6479 style, wireguard-go replay/replay.go) -----------

REPLAY_BLOCK_BITS_LOG: Final = 6
REPLAY_BLOCK_BITS: Final = 1 << REPLAY_BLOCK_BITS_LOG  # 64
REPLAY_RING_BLOCKS: Final = 128
REPLAY_WINDOW: Final = (REPLAY_RING_BLOCKS - 1) * REPLAY_BLOCK_BITS  # 8128

# --- Load (wireguard-go device.go, ratelimiter/ratelimiter.go) ---------------

RATELIMIT_PACKETS_PER_SECOND: Final = 20
RATELIMIT_PACKETS_BURSTABLE: Final = 5
RATELIMIT_GC_TIME: Final = 1.0  # idle source entries are dropped after this
QUEUE_HANDSHAKE_SIZE: Final = 1024
UNDER_LOAD_QUEUE_SIZE: Final = QUEUE_HANDSHAKE_SIZE // 8  # 128
UNDER_LOAD_AFTER_TIME: Final = 1.0  # "under load" is sticky this long

# --- Peers and UAPI ------------------------------------------------------------

MAX_PERSISTENT_KEEPALIVE: Final = 65535
