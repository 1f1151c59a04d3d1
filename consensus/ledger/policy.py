"""Native multisignature: threshold trees and the account templates built from them.

A policy is `k_of(k, [key | policy])`: satisfied when at least `k` of its children are, a key
child being satisfied by a valid signature of that key. Trees nest at most 3 deep and hold at
most 32 keys. Each account has one policy per operation class (`admin`, `write`,
`emergency`), evaluated over the distinct valid signatures on a transaction.

Templates:
- `patient-controlled` (default): admin = both patient keys; write = both patient keys, or one
  patient key and one team hospital; emergency = a trusted party (the ledger also requires the
  requesting hospital's own signature). No set of hospital keys without a patient key can
  write, grant or change a policy.
- `nem-2-of-n`: the paper's NEM mapping, any 2 of {patient key 1, patient key 2, each hospital}
  for admin and write. Two hospitals together can act for the patient: the flaw we fix,
  available so it can be shown.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Sequence
from typing import Annotated, Final

from carechain.consensus.codec import IntRange, Record, Size
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.types import PublicKey

POLICY_DEPTH_MAX: Final = 3
POLICY_KEYS_MAX: Final = 32


class OperationClass(enum.IntEnum):
    ADMIN = 1
    WRITE = 2
    EMERGENCY = 3


class Template(enum.IntEnum):
    PATIENT_CONTROLLED = 1
    NEM_2_OF_N = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclasses.dataclass(frozen=True, slots=True)
class Policy(Record):
    threshold: Annotated[int, IntRange(1, POLICY_KEYS_MAX)]
    keys: Annotated[tuple[PublicKey, ...], Size(0, POLICY_KEYS_MAX)] = ()
    policies: Annotated[tuple[Policy, ...], Size(0, POLICY_KEYS_MAX)] = ()

    def satisfied_by(self, signers: Collection[bytes]) -> bool:
        met = sum(1 for key in self.keys if key in signers)
        if met >= self.threshold:
            return True
        for sub in self.policies:
            if sub.satisfied_by(signers):
                met += 1
                if met >= self.threshold:
                    return True
        return False

    def all_keys(self) -> frozenset[bytes]:
        found = set(self.keys)
        for sub in self.policies:
            found |= sub.all_keys()
        return frozenset(found)

    def depth(self) -> int:
        return 1 + max((sub.depth() for sub in self.policies), default=0)

    def key_count(self) -> int:
        return len(self.keys) + sum(sub.key_count() for sub in self.policies)


def k_of(threshold: int, children: Sequence[bytes | Policy]) -> Policy:
    keys = tuple(c for c in children if isinstance(c, bytes))
    policies = tuple(c for c in children if isinstance(c, Policy))
    return Policy(threshold, keys, policies)


def check_policy(policy: Policy, where: str = "policy") -> None:
    """Reject a policy that could never be satisfied or breaks the size bounds."""
    if policy.depth() > POLICY_DEPTH_MAX:
        raise TxRejected(
            "bad_policy", f"{where} nests {policy.depth()} deep, at most {POLICY_DEPTH_MAX}"
        )
    if policy.key_count() > POLICY_KEYS_MAX:
        raise TxRejected(
            "bad_policy", f"{where} holds {policy.key_count()} keys, at most {POLICY_KEYS_MAX}"
        )
    _check_node(policy, where)


def _check_node(policy: Policy, where: str) -> None:
    children = len(policy.keys) + len(policy.policies)
    if policy.threshold > children:
        raise TxRejected(
            "bad_policy", f"{where} needs {policy.threshold} of only {children} children"
        )
    if len(set(policy.keys)) != len(policy.keys):
        raise TxRejected("bad_policy", f"{where} lists a key twice")
    for index, sub in enumerate(policy.policies):
        _check_node(sub, f"{where}.policies[{index}]")


@dataclasses.dataclass(frozen=True, slots=True)
class PolicySet(Record):
    """The three policies of an account."""

    admin: Policy
    write: Policy
    emergency: Policy

    def for_class(self, operation: OperationClass) -> Policy:
        if operation is OperationClass.ADMIN:
            return self.admin
        if operation is OperationClass.WRITE:
            return self.write
        return self.emergency

    def replaced(self, operation: OperationClass, policy: Policy) -> PolicySet:
        name = operation.name.lower()
        return dataclasses.replace(self, **{name: policy})


def single_key_policies(key: bytes) -> PolicySet:
    only = k_of(1, [key])
    return PolicySet(only, only, only)


def patient_policies(patient_keys: tuple[bytes, bytes], trusted: Sequence[bytes]) -> PolicySet:
    """A patient's own account: both keys administer and write."""
    both = k_of(2, list(patient_keys))
    emergency = k_of(1, list(trusted)) if trusted else both
    return PolicySet(both, both, emergency)


def vault_policies(
    template: Template,
    patient_keys: tuple[bytes, bytes],
    hospitals: Sequence[bytes],
    trusted: Sequence[bytes],
) -> PolicySet:
    both = k_of(2, list(patient_keys))
    emergency = k_of(1, list(trusted)) if trusted else both
    if template is Template.NEM_2_OF_N:
        any_two = k_of(2, [*patient_keys, *hospitals])
        return PolicySet(any_two, any_two, emergency)
    if not hospitals:
        return PolicySet(both, both, emergency)
    patient_and_hospital = k_of(2, [k_of(1, list(patient_keys)), k_of(1, list(hospitals))])
    return PolicySet(both, k_of(1, [both, patient_and_hospital]), emergency)
