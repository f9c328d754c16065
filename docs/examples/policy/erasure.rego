# The worked example of docs/policy.md: invoices are kept under tax and commercial law, and
# anything under a litigation hold waits. Every other dataset gets no decision: erased.
#
# Input: {"dataset": {"namespace", "name", "columns", "facets"},
#         "request": {"reason", "received", "identity_types"}, "holds": [...]}
# Output: decision := {"action": "erase" | "exempt" | "defer", "basis": "<text>"}
package erasure

import rego.v1

# the keys of the dataset's OpenLineage "tags" facet: {"tags": [{"key", "value", "source"}]}
tags contains tag.key if {
	some tag in input.dataset.facets.tags.tags
}

invoices if "finance" in tags

# a name whose last part is invoice or invoices: "billing.invoices", "/lake/finance/invoices"
invoices if regex.match(`(^|[./])invoices?$`, input.dataset.name)

litigation if "litigation" in tags

# A litigation hold comes first: it keeps even data that would otherwise be erased or exempt.
decision := {
	"action": "defer",
	"basis": "Art. 17(3)(e) GDPR: needed for the establishment, exercise or defence of legal claims (litigation hold)",
} if litigation

decision := {
	"action": "exempt",
	"basis": "Art. 17(3)(b) GDPR: legal obligation to keep invoices 10 years (tax and commercial law, e.g. French Code de commerce art. L123-22, Swiss CO art. 958f)",
} if {
	invoices
	not litigation
}
