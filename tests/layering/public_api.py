#!/usr/bin/env python3
"""Fails when a public declaration of plinth names a detail type.

Usage: public_api.py CLANG++ INCLUDE_DIR

Parses <plinth/plinth.hpp> with clang (-ast-dump=json) and walks namespace plinth outside
plinth::detail: every public member of a public class (functions, constructors, data members,
type aliases, bases) and every free function and alias must name only public types. Private
members, friends and the bodies of functions may use detail freely.
"""
import json
import subprocess
import sys
import tempfile

SIGNATURES = {"CXXMethodDecl", "CXXConstructorDecl", "CXXConversionDecl", "FunctionDecl", "FieldDecl",
              "VarDecl", "TypeAliasDecl", "TypedefDecl"}


def decls(text):
    decoder, at, out = json.JSONDecoder(), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return out
        node, at = decoder.raw_decode(text, at)
        out.append(node)


def names_detail(qual_type):
    return "detail::" in qual_type


def where(node):
    loc = node.get("loc", {})
    return f"{loc.get('file', '?')}:{loc.get('line', '?')}"


def walk(node, scope, public, problems, last_file):
    kind = node.get("kind")
    loc = node.get("loc", {})
    last_file = loc.get("file", last_file)
    if node.get("isImplicit") or kind in ("FriendDecl", "ClassTemplateSpecializationDecl"):
        return
    if kind == "NamespaceDecl":
        if node.get("name") == "detail":
            return
        for child in node.get("inner", []):
            walk(child, scope + [node.get("name", "")], True, problems, last_file)
        return
    if not public:
        return
    name = "::".join(scope + [node.get("name", "")])
    if kind in SIGNATURES:
        qual = node.get("type", {}).get("qualType", "")
        if names_detail(qual):
            problems.append(f"{last_file}:{loc.get('line', '?')}: {name} names a detail type: {qual}")
        return
    if kind in ("FunctionTemplateDecl", "ClassTemplateDecl", "TypeAliasTemplateDecl"):
        for child in node.get("inner", []):
            if child.get("kind") not in ("TemplateTypeParmDecl", "NonTypeTemplateParmDecl"):
                walk(child, scope, public, problems, last_file)
        return
    if kind == "CXXRecordDecl" and "inner" in node:
        for base in node.get("bases", []):
            if base.get("access") == "public" and names_detail(base.get("type", {}).get("qualType", "")):
                problems.append(f"{last_file}:{loc.get('line', '?')}: {name} derives publicly from a detail type")
        access = "private" if node.get("tagUsed") == "class" else "public"
        for child in node["inner"]:
            if child.get("kind") == "AccessSpecDecl":
                access = child.get("access")
                continue
            walk(child, scope + [node.get("name", "")], access == "public", problems, last_file)


def main():
    clang, include = sys.argv[1], sys.argv[2]
    with tempfile.NamedTemporaryFile("w", suffix=".cpp") as tu:
        tu.write("#include <plinth/plinth.hpp>\n")
        tu.flush()
        dump = subprocess.run([clang, "-std=c++20", "-I", include, "-fsyntax-only", "-Xclang", "-ast-dump=json",
                               "-Xclang", "-ast-dump-filter=plinth", tu.name],
                              check=True, capture_output=True, text=True).stdout
    problems = []
    for node in decls(dump):
        if node.get("kind") == "NamespaceDecl" and node.get("name") == "plinth":
            walk(node, [], True, problems, "?")
    for p in sorted(set(problems)):
        print(p)
    if problems:
        print(f"{len(set(problems))} public declarations name a detail type")
        return 1
    print("public API: no public declaration names a detail type")
    return 0


if __name__ == "__main__":
    sys.exit(main())
