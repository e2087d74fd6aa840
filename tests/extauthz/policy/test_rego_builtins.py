"""The builtins policy/README.md says rego-cpp lacks are exactly the ones it lacks, among OPA's.

OPA's builtin names are from its capabilities document (v1.x); each one the engine provides is
checked too, so a regopy upgrade that adds or drops one shows here, and the README follows.
"""

from __future__ import annotations

import re

import pytest

from extauthz.policy import PolicyError, RegoPolicy
from tests.conftest import REPO

OPA_BUILTINS = """
abs all and any array.concat array.flatten array.reverse array.slice base64.decode base64.encode
base64.is_valid base64url.decode base64url.encode base64url.encode_no_pad bits.and bits.lsh
bits.negate bits.or bits.rsh bits.xor cast_array cast_boolean cast_null cast_object cast_set
cast_string ceil concat contains count crypto.hmac.equal crypto.hmac.md5 crypto.hmac.sha1
crypto.hmac.sha256 crypto.hmac.sha512 crypto.md5 crypto.parse_private_keys crypto.sha1
crypto.sha256 crypto.x509.parse_and_verify_certificates
crypto.x509.parse_and_verify_certificates_with_options crypto.x509.parse_certificate_request
crypto.x509.parse_certificates crypto.x509.parse_keypair crypto.x509.parse_rsa_private_key div
endswith equal floor format_int glob.match glob.quote_meta graph.reachable graph.reachable_paths
graphql.is_valid graphql.parse graphql.parse_and_verify graphql.parse_query graphql.parse_schema
graphql.schema_is_valid gt gte hex.decode hex.encode http.send indexof indexof_n internal.member_2
internal.member_3 internal.print intersection io.jwt.decode io.jwt.decode_verify
io.jwt.encode_sign io.jwt.encode_sign_raw io.jwt.verify_eddsa io.jwt.verify_es256
io.jwt.verify_es384 io.jwt.verify_es512 io.jwt.verify_hs256 io.jwt.verify_hs384
io.jwt.verify_hs512 io.jwt.verify_ps256 io.jwt.verify_ps384 io.jwt.verify_ps512
io.jwt.verify_rs256 io.jwt.verify_rs384 io.jwt.verify_rs512 is_array is_boolean is_null is_number
is_object is_set is_string json.filter json.is_valid json.marshal json.marshal_with_options
json.match_schema json.patch json.remove json.unmarshal json.verify_schema lower lt lte max min
minus mul neq net.cidr_contains net.cidr_contains_matches net.cidr_expand net.cidr_intersects
net.cidr_is_valid net.cidr_merge net.cidr_overlap net.lookup_ip_addr numbers.range
numbers.range_step object.filter object.get object.keys object.remove object.subset object.union
object.union_n opa.runtime or plus product providers.aws.sign_req rand.intn re_match
regex.find_all_string_submatch_n regex.find_n regex.globs_match regex.is_valid regex.match
regex.replace regex.split regex.template_match rego.metadata.chain rego.metadata.rule
rego.parse_module rem replace round semver.compare semver.is_valid set_diff sort split sprintf
startswith strings.any_prefix_match strings.any_suffix_match strings.count
strings.render_template strings.replace_n strings.reverse substring sum time.add_date time.clock
time.date time.diff time.format time.now_ns time.parse_duration_ns time.parse_ns
time.parse_rfc3339_ns time.weekday to_number trace trim trim_left trim_prefix trim_right
trim_space trim_suffix type_name union units.parse units.parse_bytes upper urlquery.decode
urlquery.decode_object urlquery.encode urlquery.encode_object uuid.parse uuid.rfc4122 walk
yaml.is_valid yaml.marshal yaml.unmarshal
""".split()  # noqa: SIM905 (a list of names, as OPA prints them)


def documented_missing() -> set[str]:
    readme = (REPO / "policy" / "README.md").read_text()
    listed = readme.split("<!-- builtins rego-cpp lacks -->")[1].split("<!-- end of")[0]
    return set(re.findall(r"`([a-z0-9_.]+)`", listed))


def test_the_readme_names_exactly_the_opa_builtins_the_engine_lacks() -> None:
    from regopy import Interpreter

    engine = Interpreter()
    missing = {name for name in OPA_BUILTINS if not engine.is_builtin(name)}
    assert documented_missing() == missing


@pytest.mark.parametrize(
    "name", ["net.cidr_merge", "strings.render_template", "json.verify_schema"]
)
def test_a_documented_missing_builtin_is_refused_at_load(name: str) -> None:
    source = f"package envoy.authz\nimport rego.v1\nallow if {name}(input.x)\n"
    with pytest.raises(PolicyError, match=f"calls {re.escape(name)}, which keymint's Rego engine"):
        RegoPolicy.compile(source, "p.rego", query="envoy/authz/allow")
