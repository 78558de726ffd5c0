// Command protogen compiles procsync's .proto schema with a pure-Go compiler
// (github.com/bufbuild/protocompile; there is no protoc on the build machines)
// and runs the protoc-gen-go plugin on the result, writing the generated Go
// files below -out. It is the engine behind go/scripts/gen.sh and
// go/scripts/check-gen.sh.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

func main() {
	protoPath := flag.String("proto_path", "", "root directory of the .proto files")
	plugin := flag.String("plugin", "", "path of the protoc-gen-go binary")
	out := flag.String("out", "", "directory the generated files are written to")
	param := flag.String("param", "", "plugin parameter (e.g. module=github.com/x/y)")
	flag.Parse()
	if *protoPath == "" || *plugin == "" || *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: protogen -proto_path DIR -plugin PROTOC_GEN_GO -out DIR [-param P] FILE.proto...")
		os.Exit(2)
	}
	if err := run(*protoPath, *plugin, *out, *param, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(protoPath, plugin, out, param string, files []string) error {
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{protoPath},
		}),
		// Keep comments: protoc-gen-go copies them into the Go code.
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := compiler.Compile(context.Background(), files...)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}

	// The request lists every file in dependency order, like protoc does.
	var protoFiles []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		protoFiles = append(protoFiles, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: files,
		ProtoFile:      protoFiles,
	}
	if param != "" {
		req.Parameter = proto.String(param)
	}
	in, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(plugin)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", plugin, err, strings.TrimSpace(stderr.String()))
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return fmt.Errorf("plugin response: %w", err)
	}
	if resp.Error != nil {
		return fmt.Errorf("plugin: %s", resp.GetError())
	}
	for _, f := range resp.File {
		name := filepath.Clean(f.GetName())
		if filepath.IsAbs(name) || strings.HasPrefix(name, "..") {
			return fmt.Errorf("plugin wants to write outside -out: %q", f.GetName())
		}
		dst := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(f.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
