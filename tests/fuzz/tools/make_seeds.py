#!/usr/bin/python3
"""Writes the generated seed corpora under tests/fuzz/seeds/ (message,
envelope, admin).  Re-run after messages.def changes:

    /usr/bin/python3 tests/fuzz/tools/make_seeds.py

The envelope seeds are sealed with the key fuzz_envelope.c uses, so they
get past the HMAC and exercise msg_decode behind it.
"""
import hashlib
import hmac
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, '..', 'seeds')
ENVELOPE_KEY = b'fuzz-key-0123456789abcdef0123456789'  # fuzz_envelope.c

SNAP = {'order_id': 'ORD-1', 'status': 'PAID', 'course_id': 'c-go',
        'course_title': 'Go', 'amount': 150000, 'currency': 'IDR',
        'customer': {'name': 'Budi', 'email': 'b@example.id',
                     'phone': '+628123'},
        'created_at': '2026-11-23T09:00:00Z',
        'expires_at': '2026-11-24T09:00:00.5Z',
        'redirect_url': 'https://app.sandbox.midtrans.com/snap/v4/x'}
EVID = {'evidence': {'kind': 'ingest', 'seq': 7}}

DATA = {
    'stream.heartbeat': {'head': 12},
    'stream.replay_request': {'stream': 'orders', 'after': 3, 'max': 100},
    'test.effect': {'n': 1},
    'payment.notification': {
        'event_id': 9, 'order_id': 'ORD-1',
        'transaction_status': 'settlement', 'status_code': '200',
        'gross_amount': '150000.00', 'currency': 'IDR',
        'payment_type': 'gopay', 'fraud_status': None,
        'transaction_id': 'b6c5', 'transaction_time': '2026-11-23 16:33:19',
        'settlement_time': '2026-11-23 16:34:00',
        'received_at': '2026-11-23T09:34:00.123Z',
        'raw': {'order_id': 'ORD-1', 'extra': [1, 2, {'x': None}]}},
    'status.check': {
        'check_id': 4, 'order_id': 'ORD-1', 'http_status': 200,
        'verdict': 'paid', 'transaction_status': 'settlement',
        'checked_at': '2026-11-23T09:35:00Z', 'past_expiry': False,
        'confirm': True},
    'order.created': dict(SNAP, status='PENDING'),
    'order.paid': dict(SNAP, **EVID, paid_at='2026-11-23T09:34:01Z'),
    'order.failed': dict(SNAP, **EVID),
    'order.expired': dict(SNAP, **EVID),
    'order.cancelled': dict(SNAP, **EVID),
    'order.refunded': dict(SNAP, **EVID, refund_amount=50000, partial=True),
    'order.evidence': {
        'order_id': 'ORD-1', 'evidence': {'kind': 'recon', 'check_id': 4},
        'transaction_status': 'deny', 'received_at': '2026-11-23T09:34:00Z',
        'applied': False, 'order_status': 'PENDING'},
    'order.flagged': dict(SNAP, reason='amount_mismatch'),
    'confirm.request': dict(SNAP, evidence={'source': 'ingest', 'ref': 9},
                            transaction_status='settlement',
                            fraud_status='accept', gross_amount='150000.00',
                            requested_at='2026-11-23T09:34:00.5Z'),
    'access.granted': dict(SNAP, customer_email='b@example.id',
                           valid_until='2027-11-23T09:34:01Z'),
    'access.revoked': dict(SNAP, customer_email='b@example.id',
                           reason='reversal'),
    'no.such.type': {'a': 1},
}


def body(i, typ, data):
    return json.dumps({
        'v': 1, 'stream': 'orders', 'seq': i,
        'id': '3f1c1a2e-9b7d-4c1e-8f00-%012x' % i, 'type': typ,
        'at': '2026-11-23T09:33:19.123Z', 'data': data},
        separators=(',', ':')).encode()


def seal(b):
    mac = hmac.new(ENVELOPE_KEY, b, hashlib.sha256).hexdigest()
    return b'kasir1 k1 ' + mac.encode() + b'\n' + b


def write(sub, name, data):
    d = os.path.join(SEEDS, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def main():
    for i, (typ, data) in enumerate(sorted(DATA.items()), 1):
        b = body(i, typ, data)
        write('message', typ + '.json', b)
        write('envelope', typ + '.frame', seal(b))
    write('envelope', 'wrong_key_id.frame',
          seal(body(1, 'test.effect', {'n': 1})).replace(b' k1 ', b' k9 ', 1))
    write('envelope', 'bad_mac.frame',
          b'kasir1 k1 ' + b'0' * 64 + b'\n{}')

    admin = {
        'echo': {'v': 1, 'cmd': 'echo', 'args': {'a': [1, 'x']},
                 'reason': 'why', 'incident': 'INC-1', 'actor': 'alice'},
        'as_role': {'v': 1, 'cmd': 'echo', 'args': {}, 'as_role': 'none'},
        'as_role_bad': {'v': 1, 'cmd': 'echo', 'as_role': 'root'},
        'unknown_cmd': {'v': 1, 'cmd': 'order.show',
                        'args': {'order_id': 'ORD-1'}},
        'no_args': {'v': 1, 'cmd': 'echo'},
        'args_array': {'v': 1, 'cmd': 'echo', 'args': [1]},
        'bad_version': {'v': 2, 'cmd': 'echo'},
        'empty_cmd': {'v': 1, 'cmd': ''},
        'long_cmd': {'v': 1, 'cmd': 'x' * 65},
    }
    for name, req in admin.items():
        write('admin', name + '.json', json.dumps(req).encode())
    write('admin', 'not_object.json', b'[1,2,3]')
    write('admin', 'truncated.json', b'{"v":1,"cmd":"ec')


if __name__ == '__main__':
    main()
