// Command render is a small stand-in for `helm template`, used to test the dkron-nats chart where no helm
// binary is available. It uses the same engine as Helm (Go's text/template with the sprig function
// library) and Helm's own template functions, but none of Helm's release machinery: no hooks, no
// subcharts or dependencies, no .Capabilities, no .Files, lookup finding nothing, no values.schema.json check.
//
// Usage:
//
//	render [-f values.yaml]... [--name RELEASE] [--namespace NS] [--notes] CHART_DIR
//
// It loads CHART_DIR/Chart.yaml and CHART_DIR/values.yaml, merges each -f file over the values (maps are
// merged key by key, anything else is replaced, a null removes the key, as in Helm), renders every
// templates/*.yaml with .Values, .Release, .Chart and .Template, and prints the non-empty results as YAML
// documents separated by `---`. Any parse or execution error, a `required` value that is missing, a
// `fail`, or output that is not valid YAML ends it with exit status 1 and a message naming the template.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

// valueFiles collects repeated -f flags.
type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	var files valueFiles
	flag.Var(&files, "f", "YAML file merged over the chart's values.yaml (repeatable, later files win)")
	name := flag.String("name", "release", "release name (.Release.Name)")
	namespace := flag.String("namespace", "default", "release namespace (.Release.Namespace)")
	notes := flag.Bool("notes", false, "print the rendered templates/NOTES.txt after the manifests")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: render [-f values.yaml]... [--name NAME] "+
			"[--namespace NS] [--notes] CHART_DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	out, err := render(flag.Arg(0), files, *name, *namespace, *notes)
	if err != nil {
		fmt.Fprintf(os.Stderr, "render: %v\n", err)
		os.Exit(1)
	}
	fmt.Print(out)
}

// render returns the chart's manifests (and its notes when asked), or the first error.
func render(chartDir string, files []string, release, namespace string, notes bool) (string, error) {
	chart, err := loadChart(chartDir)
	if err != nil {
		return "", err
	}
	values, err := loadYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		override, err := loadYAMLMap(f)
		if err != nil {
			return "", err
		}
		values = merge(values, override)
	}
	// Helm reads values through JSON, so every number is a float64: templates must convert (`int`) where
	// an integer is needed, and this renderer makes them do so too.
	values = jsonNumbers(values).(map[string]interface{})
	chartName, _ := chart["Name"].(string)
	if chartName == "" {
		return "", fmt.Errorf("%s: Chart.yaml has no name", chartDir)
	}

	// Every file of templates/ is parsed into one template set, named "<chart>/templates/<file>" as in
	// Helm, so that `define`d templates (e.g. in _helpers.tpl) are visible to all of them.
	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return "", err
	}
	sort.Strings(paths)
	root := template.New(chartName)
	root.Option("missingkey=zero") // Helm's default (non-strict) mode
	root.Funcs(funcMap(root))
	var names []string
	for _, p := range paths {
		base := filepath.Base(p)
		if !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml") ||
			strings.HasSuffix(base, ".tpl") || base == "NOTES.txt") {
			continue
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		tname := chartName + "/templates/" + base
		if _, err := root.New(tname).Parse(string(text)); err != nil {
			return "", err
		}
		names = append(names, tname)
	}

	releaseObj := map[string]interface{}{
		"Name": release, "Namespace": namespace, "Service": "Helm",
		"IsInstall": true, "IsUpgrade": false, "Revision": 1,
	}
	var docs []string
	var notesText string
	for _, tname := range names {
		base := filepath.Base(tname)
		if strings.HasPrefix(base, "_") || strings.HasSuffix(base, ".tpl") {
			continue // partials only hold named templates
		}
		data := map[string]interface{}{
			"Values":   values,
			"Release":  releaseObj,
			"Chart":    chart,
			"Template": map[string]interface{}{"Name": tname, "BasePath": chartName + "/templates"},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, tname, data); err != nil {
			return "", err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			notesText = text
			continue
		}
		for _, doc := range splitDocuments(text) {
			var parsed interface{}
			if err := yaml.Unmarshal([]byte(doc), &parsed); err != nil {
				return "", fmt.Errorf("%s: the output is not valid YAML: %v\n%s", tname, err, doc)
			}
			if parsed == nil {
				continue // only comments or blank lines
			}
			docs = append(docs, "# Source: "+tname+"\n"+doc)
		}
	}
	var out strings.Builder
	for _, doc := range docs {
		out.WriteString("---\n")
		out.WriteString(strings.TrimRight(doc, "\n"))
		out.WriteString("\n")
	}
	if notes && strings.TrimSpace(notesText) != "" {
		out.WriteString("\nNOTES:\n" + notesText)
	}
	return out.String(), nil
}

// splitDocuments splits one template's output at its `---` lines.
func splitDocuments(text string) []string {
	var docs []string
	var cur []string
	flush := func() {
		doc := strings.Join(cur, "\n")
		if strings.TrimSpace(doc) != "" {
			docs = append(docs, doc)
		}
		cur = nil
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// funcMap is sprig's text/template functions plus those Helm adds; root is the template set that
// `include` and `tpl` look named templates up in.
func funcMap(root *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env") // Helm removes these two: a chart must not depend on the renderer's environment
	delete(f, "expandenv")
	f["toYaml"] = func(v interface{}) string {
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return ""
		}
		return strings.TrimSuffix(buf.String(), "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		if _, err := t.New("tpl").Parse(text); err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, "tpl", data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	// lookup finds nothing, as `helm template` (no cluster) does.
	f["lookup"] = func(apiVersion, kind, namespace, name string) map[string]interface{} {
		return map[string]interface{}{}
	}
	// required fails the render with msg when v is missing (nil) or an empty string, as Helm's does.
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return nil, fmt.Errorf("%s", msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	return f
}

// loadChart reads Chart.yaml into a map whose keys are capitalised as Helm exposes them
// (.Chart.Name, .Chart.Version, .Chart.AppVersion, ...).
func loadChart(dir string) (map[string]interface{}, error) {
	raw, err := loadYAMLMap(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	chart := map[string]interface{}{}
	for k, v := range raw {
		if k == "" {
			continue
		}
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	if v, ok := chart["ApiVersion"]; ok { // Helm spells it .Chart.APIVersion
		chart["APIVersion"] = v
	}
	return chart, nil
}

// loadYAMLMap reads a YAML file holding a map (an empty file is an empty map).
func loadYAMLMap(path string) (map[string]interface{}, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(text, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return m, nil
}

// merge returns base with override laid over it: maps are merged recursively, other values replaced,
// and a null in override deletes the key (Helm's way to drop a default).
func merge(base, override map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range override {
		if v == nil {
			delete(out, k)
			continue
		}
		if vm, ok := v.(map[string]interface{}); ok {
			if bm, ok := out[k].(map[string]interface{}); ok {
				out[k] = merge(bm, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// jsonNumbers returns v with every integer turned into a float64, as Helm's values are.
func jsonNumbers(v interface{}) interface{} {
	switch x := v.(type) {
	case map[string]interface{}:
		for k, e := range x {
			x[k] = jsonNumbers(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = jsonNumbers(e)
		}
		return x
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	default:
		return v
	}
}
